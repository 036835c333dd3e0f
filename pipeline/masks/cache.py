"""The masks cache ``results/masks/{source}/{video}.h5`` (stage ``masks``, format 1).

One group per annotated frame, named ``%05d`` (the 1-based frame id), holding

=========  =====================================  ==========================================
dataset    shape, dtype                           meaning
=========  =====================================  ==========================================
boxes      (N, 4) float32                         ``x1, y1, x2, y2``, frame pixels
scores     (N,) float32                           detection score (1.0 for gt)
labels     (N,) int64                             A2D actor 1..7 (0: class without an actor)
masks      (N, H, W) uint8, gzip, chunks (1,H,W)  full-frame mask probability x 255
=========  =====================================  ==========================================

A frame with no region is a group with N = 0. Root attributes: the provenance of
:func:`pipeline.h5cache.create_cache` (``source`` is ``model``, ``checkpoint`` or ``gt``), plus
``video``, ``height``, ``width``, ``checkpoint`` (the weights file, "" for gt) and
``checkpoint_sha256``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.h5cache import create_cache, open_cache
from pipeline.masks.regions import Regions

STAGE = "masks"
FORMAT_VERSION = 1
SOURCES = ("model", "checkpoint", "gt")


def write_masks_cache(path: str | Path, regions: dict[int, Regions], *, video: str, source: str,
                      config: Any, height: int, width: int, checkpoint: str = "",
                      checkpoint_sha256: str = "", module: str = "pipeline.masks.run") -> None:
    """Write the regions of every annotated frame of one video (atomically).

    Args:
        regions: ``{frame id (1-based): Regions}``, each of frame size (``height``, ``width``).
        source: ``model``, ``checkpoint`` or ``gt``.
        config: the ``masks`` config section (stored with its hash).
        checkpoint, checkpoint_sha256: the segmenter weights file the regions come from.
        module: the module whose code hash is recorded.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown masks source {source!r}; choose one of {list(SOURCES)}")
    for frame, reg in regions.items():
        reg.validate(f"{path} frame {frame}")
        if reg.size != (height, width):
            raise DataError(path, f"frame {frame}: masks of size {reg.size}, frame is "
                                  f"{(height, width)}")
    with create_cache(path, stage=STAGE, module=module, config=config,
                      format_version=FORMAT_VERSION, source=source, video=video,
                      height=height, width=width, checkpoint=checkpoint,
                      checkpoint_sha256=checkpoint_sha256) as f:
        for frame in sorted(regions):
            reg = regions[frame]
            g = f.create_group(f"{frame:05d}")
            g.create_dataset("boxes", data=reg.boxes.reshape(-1, 4).astype(np.float32))
            g.create_dataset("scores", data=reg.scores.astype(np.float32))
            g.create_dataset("labels", data=reg.labels.astype(np.int64))
            # maxshape lets the (1, H, W) chunk exist even when N = 0.
            g.create_dataset("masks", data=reg.masks, chunks=(1, height, width),
                             maxshape=(None, height, width), compression="gzip",
                             compression_opts=4)


def read_masks_cache(path: str | Path, frames: list[int] | None = None) -> dict[int, Regions]:
    """Read a masks cache: ``{frame id: Regions}`` for all frames, or for ``frames``.

    Raises:
        DataError: naming the file, if it is not a masks cache of this format, a requested
            frame is absent, or a group is malformed.
    """
    with open_cache(path, stage=STAGE, format_version=FORMAT_VERSION) as f:
        names = sorted(k for k in f.keys())
        available = {}
        for name in names:
            if not (len(name) == 5 and name.isdigit()):
                raise DataError(path, f"unexpected group {name!r} (want %05d frame ids)")
            available[int(name)] = name
        wanted = sorted(available) if frames is None else [int(x) for x in frames]
        missing = [x for x in wanted if x not in available]
        if missing:
            raise DataError(path, f"no regions for frame(s) {missing}; the cache holds "
                                  f"{sorted(available)}")
        out: dict[int, Regions] = {}
        for frame in wanted:
            g = f[available[frame]]
            try:
                reg = Regions(boxes=np.asarray(g["boxes"], np.float32).reshape(-1, 4),
                              scores=np.asarray(g["scores"], np.float32),
                              labels=np.asarray(g["labels"], np.int64),
                              masks=np.asarray(g["masks"]))
            except KeyError as exc:
                raise DataError(path, f"frame {frame}: missing dataset ({exc})") from None
            out[frame] = reg.validate(f"{path} frame {frame}")
    return out
