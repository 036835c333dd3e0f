"""The feature cache ``results/region_model/{streams}/features/{video}.h5`` (stage ``features``).

Format 1 (``docs/architecture.md``):

==============  ===========================================  ==================================
dataset         shape, dtype                                 meaning
==============  ===========================================  ==================================
``features``    (A, C, h, w) float16, chunks (1, C, h, w)    fused front-end features of each
                no compression                               annotated frame (RGB stream first)
``frame_ids``   (A,) int32                                   1-based annotated frame ids
==============  ===========================================  ==================================

Root attributes: the provenance set of :func:`pipeline.h5cache.create_cache` plus ``video``,
``split``, ``streams``, ``input_height``/``input_width`` (the size frames were resized to),
``native_height``/``native_width`` (the clip), ``stride``, ``channels``, ``stage1`` (checkpoint
path) and ``stage1_sha256``.

float16 is not compressed: dense activations gain < 15% from gzip while every random read would
decompress a whole chunk (``shared/docs/snakemake-notes.md`` section 5.2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import DataError
from pipeline.h5cache import create_cache, open_cache

STAGE = "features"
FORMAT_VERSION = 1
_REQUIRED_ATTRS = ("video", "streams", "input_height", "input_width", "native_height",
                   "native_width", "stride", "channels", "stage1_sha256")


def bytes_per_frame(channels: int, height: int, width: int, stride: int = 8) -> int:
    """float16 bytes of one frame's features: ``channels x ceil(H/stride) x ceil(W/stride) x 2``.

    The paper's configuration, two ResNet-101 streams (2 x 2048 channels) on 320 x 568 frames at
    stride 8 (40 x 71): 23,265,280 bytes (22.2 MiB) per frame.
    """
    h, w = -(-height // stride), -(-width // stride)
    return channels * h * w * 2


def write_feature_cache(path: str | Path, *, features: np.ndarray, frame_ids: list[int],
                        config: Any, **attrs: Any) -> None:
    """Write (A, C, h, w) features (any float dtype, stored float16) atomically.

    ``attrs`` must hold the keys listed in the module docstring. Values beyond float16's range
    (or NaN) raise ValueError before anything is written.
    """
    features = np.asarray(features)
    if features.ndim != 4 or features.shape[0] != len(frame_ids):
        raise ValueError(f"features {features.shape} vs {len(frame_ids)} frame ids")
    missing = [k for k in _REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"feature cache attributes missing: {missing}")
    with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
        half = features.astype(np.float16)
    if not np.isfinite(half).all():
        raise ValueError("features have non-finite values (or values beyond float16 range)")
    a, c, h, w = half.shape
    with create_cache(path, stage=STAGE, module="pipeline.region.features", config=config,
                      format_version=FORMAT_VERSION, source=str(attrs.get("stage1", "")),
                      **attrs) as f:
        ds = f.create_dataset("features", shape=half.shape, dtype=np.float16,
                              chunks=(1, c, h, w) if a else None)
        for row in range(a):
            ds[row] = half[row]
        f.create_dataset("frame_ids", data=np.asarray(frame_ids, np.int32))


class FeatureCache:
    """Read access to one feature cache; the handle opens lazily and is dropped on pickling.

    Attributes:
        path, video, split, streams: the file and what it holds.
        frame_ids: (A,) int32.
        channels, stride, input_size (H, W), native_size (H0, W0), stage1_sha256, attrs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_cache(self.path, stage=STAGE, format_version=FORMAT_VERSION) as f:
            missing = [k for k in _REQUIRED_ATTRS if k not in f.attrs]
            if missing or "features" not in f or "frame_ids" not in f:
                raise DataError(self.path, f"feature cache lacks {missing or 'its datasets'}")
            self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            self.frame_ids = np.asarray(f["frame_ids"][:], np.int32)
            self.shape = tuple(f["features"].shape)
        self.video = str(self.attrs["video"])
        self.split = str(self.attrs.get("split", ""))
        self.streams = str(self.attrs["streams"])
        self.channels = int(self.attrs["channels"])
        self.stride = int(self.attrs["stride"])
        self.input_size = (int(self.attrs["input_height"]), int(self.attrs["input_width"]))
        self.native_size = (int(self.attrs["native_height"]), int(self.attrs["native_width"]))
        self.stage1_sha256 = str(self.attrs["stage1_sha256"])
        if len(self.shape) != 4 or self.shape[:2] != (len(self.frame_ids), self.channels):
            raise DataError(self.path, f"features {self.shape} do not match "
                                       f"{len(self.frame_ids)} frames x {self.channels} channels")
        self._row = {int(fid): i for i, fid in enumerate(self.frame_ids)}
        self._file: h5py.File | None = None

    def features(self, frame: int) -> np.ndarray:
        """(C, h, w) float32 features of 1-based ``frame``; KeyError if not cached."""
        try:
            row = self._row[int(frame)]
        except KeyError:
            raise KeyError(f"{self.path}: frame {frame} is not cached "
                           f"(cached: {self.frame_ids.tolist()})") from None
        if self._file is None:
            # Each frame's chunk is read once: HDF5's chunk cache would only add a copy
            # (2.3-2.9x slower reads, benchmarks/hdf5_read.py).
            self._file = h5py.File(self.path, "r", locking=False, rdcc_nbytes=0)
        return self._file["features"][row].astype(np.float32)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles cannot be pickled; workers reopen
        return state


def read_feature_cache(path: str | Path) -> FeatureCache:
    """Open a feature cache written by stage ``features`` (checks stage and format version)."""
    return FeatureCache(path)
