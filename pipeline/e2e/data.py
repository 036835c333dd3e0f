"""Per-annotated-frame clips for the end-to-end model: the input contract of :mod:`pipeline.e2e`.

One item per annotated frame (the frame index of stage ``index``), at the clip's native size:

==================  ==================================  =========================================
key                 shape, dtype                        from
==================  ==================================  =========================================
``video, frame``    str, int (1-based)                  the frame index
``images``          (T, 3, H, W) float32 in [0, 1]      frames cache, ``FramesCache.window``
``flows``           (T, 3, H, W) float32                flow cache, ``FlowCache.xym`` (x, y,
                                                        magnitude / 20); only with ``flow_dir``
``target``          dict (see below)                    the ``.mat``; only with ``labels``
==================  ==================================  =========================================

T = ``num_frames`` (odd): the annotated frame in the middle, its context before and after, the
clip's first/last frame repeated at its borders (:meth:`pipeline.frames.FramesCache.window`).
The frames cache must hold at least ``num_frames // 2`` frames of context (``frames.context``).

``target`` (centre frame): ``boxes`` (N, 4) float32 xyxy (far corner exclusive), ``actor`` (N,)
int64 1..7, ``action`` (N,) int64 1..9, or :data:`~pipeline.e2e.labels.IGNORE_ACTION` for the
zero-shot actor, ``masks`` (N, H, W) uint8. Boxes are the tight boxes of the masks and instances
with an empty mask are left out, both by :func:`pipeline.a2d.annotations.read_annotation`: an
empty instance has no pixel to learn and a zero-size box an infinite regression target.

Items are batched by :func:`pipeline.region.data.collate` (the training engine's collate):
``images``, ``flows`` and ``target`` become lists, so clips of different sizes batch together.
HDF5 handles are opened lazily in the reading process (DataLoader workers included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pipeline.a2d.annotations import read_annotation
from pipeline.e2e.labels import mask_action_labels
from pipeline.errors import DataError
from pipeline.flow.cache import FlowCache, read_flow_cache
from pipeline.frames import FramesCache, read_frames_cache
from pipeline.region.data import FrameRecord

__all__ = ["ClipFrames", "read_target"]



def read_target(mat: str | Path, zero_shot_actor: int | None = None) -> dict[str, Tensor]:
    """GT instances of one annotated frame as a training target (see the module docstring).

    Args:
        mat: the frame's ``.mat``.
        zero_shot_actor: actor id 1..7 whose action labels are withheld
            (:func:`pipeline.e2e.labels.mask_action_labels`), or None.
    """
    # read_annotation leaves out empty masks and derives each box from its mask, so every box
    # has positive width and height, as torchvision's detector requires.
    ann = read_annotation(mat)
    h, w = ann.label.shape
    target = {
        "boxes": torch.from_numpy(ann.boxes.astype(np.float32).reshape(-1, 4)),
        "actor": torch.from_numpy((ann.ids // 10).astype(np.int64)),
        "action": torch.from_numpy((ann.ids % 10).astype(np.int64)),
        "masks": torch.from_numpy(ann.masks.astype(np.uint8).reshape(-1, h, w)),
    }
    if zero_shot_actor is not None:
        target = mask_action_labels([target], zero_shot_actor)[0]
    return target


def _to_chw(x: np.ndarray) -> Tensor:
    """(T, H, W, C) -> (T, C, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


class ClipFrames(Dataset):
    """Annotated frames as clips of ``num_frames`` RGB frames (and flows) plus the GT target.

    Args:
        records: the frames, in item order (:func:`pipeline.region.data.frame_records`).
        frames_dir: folder of ``{video}.h5`` frames caches.
        flow_dir: folder of flow caches, or None (models without a motion stream).
        num_frames: T, odd (1 = the annotated frame alone).
        labels: read the GT target from each record's ``.mat``.
        zero_shot_actor: actor 1..7 whose action labels are withheld (section 4.4), or None.
    """

    def __init__(self, records: Sequence[FrameRecord], *, frames_dir: str | Path,
                 flow_dir: str | Path | None, num_frames: int, labels: bool = True,
                 zero_shot_actor: int | None = None) -> None:
        if num_frames < 1 or num_frames % 2 == 0:
            raise ValueError(f"num_frames must be odd and >= 1, got {num_frames}")
        self.records = list(records)
        self.num_frames = num_frames
        self.labels = labels
        self.zero_shot_actor = zero_shot_actor
        self.frames: dict[str, FramesCache] = {}
        self.flows: dict[str, FlowCache] = {}
        for v in sorted({r.video for r in self.records}):
            # readers only read the small index datasets here; frames are read per item
            cache = read_frames_cache(Path(frames_dir) / f"{v}.h5")
            if cache.context < num_frames // 2:
                raise DataError(cache.path, f"frames cache has context {cache.context}; a "
                                            f"{num_frames}-frame clip needs {num_frames // 2} "
                                            "(set frames.context)")
            self.frames[v] = cache
            if flow_dir is not None:
                self.flows[v] = read_flow_cache(Path(flow_dir) / f"{v}.h5")

    def __len__(self) -> int:
        return len(self.records)

    def window(self, i: int) -> list[int]:
        """1-based frame ids of item ``i``'s clip (centre = the annotated frame)."""
        rec = self.records[i]
        return self.frames[rec.video].window(rec.frame, self.num_frames // 2)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        ids = self.window(i)
        rgb = self.frames[rec.video].frames(ids)  # (T, H, W, 3) uint8
        item: dict[str, Any] = {"video": rec.video, "frame": rec.frame,
                                "images": _to_chw(rgb) / 255.0}
        if self.flows:
            flow = self.flows[rec.video]
            xym = np.stack([flow.xym(t) for t in ids])  # (T, H, W, 3) float32
            if xym.shape[:3] != rgb.shape[:3]:
                raise DataError(flow.path, f"flow {xym.shape[1:3]} != frames {rgb.shape[1:3]}")
            item["flows"] = _to_chw(xym)
        if self.labels:
            target = read_target(rec.mat, self.zero_shot_actor)
            if target["masks"].shape[1:] != rgb.shape[1:3] and len(target["masks"]):
                raise DataError(rec.mat, f"GT size {tuple(target['masks'].shape[1:])} != frame "
                                         f"size {rgb.shape[1:3]}")
            item["target"] = target
        return item
