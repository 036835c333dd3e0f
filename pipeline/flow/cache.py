"""The flow cache ``results/flow/{video}.h5`` (stage ``flow``, format 1): writer and reader.

Layout (``docs/architecture.md``): ``flow`` (T, H, W, 2) float16 chunked per frame, ``frame_ids``
(T,) int32 and ``pair`` (T, 2) int32, the two frames each flow was computed between. float16
keeps 3 significant digits: 1/64 px steps up to 32 px, 1/8 px up to 256 px. Model inputs are
encoded on read (:mod:`pipeline.flow.encode`)::

    cache = read_flow_cache("results/flow/abc.h5")
    f = cache.flow(28)      # (H, W, 2) float32, (dx, dy) px from frame pair[28][0] to pair[28][1]
    x = cache.xym(28)       # (H, W, 3) float32, Ji et al. input
    img = cache.rgb(28)     # (H, W, 3) uint8, Dang et al. input
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import DataError
from pipeline.flow.encode import flow_to_rgb, flow_to_xym
from pipeline.h5cache import create_cache, open_cache

STAGE = "flow"
FORMAT_VERSION = 1


def write_flow_cache(path: str | Path, *, flows: np.ndarray, frame_ids: list[int],
                     pairs: list[tuple[int, int]], config: Any, source: str,
                     **attrs: Any) -> None:
    """Write ``flows`` (T, H, W, 2) float atomically; non-finite values raise ValueError first.

    ``attrs`` must include ``video``, ``backend``, ``model`` and ``checkpoint``.
    """
    flows = np.asarray(flows)
    t, h, w, c = flows.shape
    if c != 2 or t != len(frame_ids) or t != len(pairs):
        raise ValueError(f"flows {flows.shape} vs {len(frame_ids)} frame ids / {len(pairs)} pairs")
    with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
        half = flows.astype(np.float16)
    if not np.isfinite(half).all():  # also catches |flow| > 65504, which float16 cannot hold
        raise ValueError("flow has non-finite values (or values beyond float16 range)")
    with create_cache(path, stage=STAGE, module="pipeline.flow", config=config,
                      format_version=FORMAT_VERSION, source=source, **attrs) as f:
        f.create_dataset("flow", data=half, chunks=(1, h, w, 2))
        f.create_dataset("frame_ids", data=np.asarray(frame_ids, np.int32))
        f.create_dataset("pair", data=np.asarray(pairs, np.int32).reshape(t, 2))


class FlowCache:
    """Read access to one flow cache; the HDF5 handle is opened lazily and dropped on pickling
    (safe to pass to DataLoader workers).

    Attributes:
        path, video: the file and its video.
        frame_ids: (T,) int32 frames that have a flow; pair: (T, 2) int32.
        backend, model, checkpoint: how the flow was computed; height, width.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_cache(self.path, stage=STAGE, format_version=FORMAT_VERSION) as f:
            try:
                self.frame_ids = np.asarray(f["frame_ids"][:], np.int32)
                self.pair = np.asarray(f["pair"][:], np.int32)
                shape = f["flow"].shape
                self.video = str(f.attrs["video"])
                self.backend = str(f.attrs["backend"])
                self.model = str(f.attrs["model"])
                self.checkpoint = str(f.attrs["checkpoint"])
            except KeyError as exc:
                raise DataError(self.path, f"flow cache lacks {exc}") from exc
        if len(shape) != 4 or shape[0] != len(self.frame_ids) or shape[-1] != 2:
            raise DataError(self.path, f"flow {shape} does not match {len(self.frame_ids)} frames")
        self.height, self.width = int(shape[1]), int(shape[2])
        self._row = {int(fid): i for i, fid in enumerate(self.frame_ids)}
        self._file: h5py.File | None = None

    def __contains__(self, frame: int) -> bool:
        return int(frame) in self._row

    def _rowof(self, frame: int) -> int:
        try:
            return self._row[int(frame)]
        except KeyError:
            raise KeyError(f"{self.path}: no flow for frame {frame} "
                           f"(have {self.frame_ids.tolist()})") from None

    def flow(self, frame: int) -> np.ndarray:
        """(H, W, 2) float32 flow (dx, dy) in pixels for 1-based ``frame``."""
        row = self._rowof(frame)
        if self._file is None:
            self._file = h5py.File(self.path, "r", locking=False)
        return self._file["flow"][row].astype(np.float32)

    def pair_of(self, frame: int) -> tuple[int, int]:
        a, b = self.pair[self._rowof(frame)]
        return int(a), int(b)

    def xym(self, frame: int) -> np.ndarray:
        """(H, W, 3) float32 x, y, magnitude encoding (:func:`~pipeline.flow.encode.flow_to_xym`)."""
        return flow_to_xym(self.flow(frame))

    def rgb(self, frame: int, max_magnitude: float | None = None) -> np.ndarray:
        """(H, W, 3) uint8 colour-wheel image (:func:`~pipeline.flow.encode.flow_to_rgb`)."""
        return flow_to_rgb(self.flow(frame), max_magnitude)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> FlowCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        return state


def read_flow_cache(path: str | Path) -> FlowCache:
    """Open a flow cache written by this stage (checks stage and format version)."""
    return FlowCache(path)
