"""Per-annotated-frame training and test data of the region-mask method (Dang et al. 2018).

One item per annotated frame, everything resized to the configured input size ``(H, W)``:

==================  ===========================  =============================================
key                 shape, dtype                 from
==================  ===========================  =============================================
``video, frame``    str, int (1-based)           the frame index
``native_size``     (2,) int64 (H0, W0)          the clip's size (predictions go back to it)
``rgb``             (3, H, W) float32 in [0, 1]  frames cache
``flow``            (3, H, W) float32 in [0, 1]  flow cache, colour-coded by ``flow_to_rgb``
``features``        (C, h, w) float32            feature cache (stage ``features``)
``actor``           (H, W) int64, 0..7           GT ``reS_id`` of the ``.mat`` (0 = background)
``action``          (H, W) int64, 0..9           GT ``reS_id`` of the ``.mat`` (0 = background)
``boxes``           (N, 4) float32               region masks caches, input-size pixels
``masks``           (N, H, W) float32 in [0, 1]  region masks caches, full-frame probabilities
``region_labels``   (N,) int64 actor 1..7        region masks caches
==================  ===========================  =============================================

Each group of keys is present only if its source is given. The flow field is resized (and its
vectors scaled) before colour coding, so ``flow_max_px`` keeps its meaning in input pixels.

HDF5 handles are opened lazily in whichever process reads (DataLoader workers included) and are
never pickled: the dataset keeps paths and small per-video reader objects whose handles drop on
pickling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipeline.a2d.annotations import read_annotation
from pipeline.a2d.classes import decode
from pipeline.errors import DataError
from pipeline.flow.cache import FlowCache, read_flow_cache
from pipeline.flow.encode import flow_to_rgb
from pipeline.frames import FramesCache, read_frames_cache
from pipeline.h5cache import open_cache
from pipeline.masks.cache import FORMAT_VERSION as MASKS_FORMAT
from pipeline.masks.cache import STAGE as MASKS_STAGE
from pipeline.masks.cache import read_masks_cache
from pipeline.region.feature_cache import FeatureCache, read_feature_cache


@dataclass(frozen=True)
class FrameRecord:
    """One annotated frame: its video, 1-based id, split and GT ``.mat`` path."""

    video: str
    frame: int
    split: str
    mat: Path


def frame_records(index: pd.DataFrame, release: str | Path, split: str | None = None,
                  videos: Sequence[str] | None = None) -> list[FrameRecord]:
    """Records of the frame index (stage ``index``), optionally one split / some videos, in
    (video, frame) order."""
    table = index if split is None else index[index.split == split]
    if videos is not None:
        table = table[table.video.isin(list(videos))]
    table = table.sort_values(["video", "frame"])
    root = Path(release)
    return [FrameRecord(str(r.video), int(r.frame), str(r.split), root / str(r.mat))
            for r in table.itertuples()]


class MasksFile:
    """One region masks cache (stage ``masks``): its source, and regions read per frame with
    :func:`pipeline.masks.cache.read_masks_cache` (which opens the file per call, so nothing
    is held open across DataLoader worker forks)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_cache(self.path, stage=MASKS_STAGE, format_version=MASKS_FORMAT) as f:
            self.source = str(f.attrs.get("source", ""))

    def regions(self, frame: int) -> dict[str, np.ndarray]:
        """``boxes`` (N, 4) float32, ``scores`` (N,) float32, ``labels`` (N,) int64,
        ``masks`` (N, H0, W0) uint8 (probability x 255) of 1-based ``frame``."""
        reg = read_masks_cache(self.path, [int(frame)])[int(frame)]
        return {"boxes": reg.boxes, "scores": reg.scores, "labels": reg.labels,
                "masks": reg.masks}


def _resize(img: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=interp)


def resize_regions(regions: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Regions of a (H0, W0) frame -> boxes in (H, W) pixels, masks (N, H, W) float32 in [0, 1]."""
    masks = regions["masks"]
    n, h0, w0 = masks.shape
    h, w = size
    out = np.zeros((n, h, w), np.float32)
    for i in range(n):
        out[i] = _resize(masks[i], size, cv2.INTER_LINEAR).astype(np.float32) / 255.0
    boxes = regions["boxes"].copy()
    boxes[:, 0::2] *= w / w0
    boxes[:, 1::2] *= h / h0
    return {"boxes": boxes, "masks": out, "labels": regions["labels"], "scores": regions["scores"]}


#: How the regions of several mask sources make training items (RegionFrames ``combine``).
COMBINE: tuple[str, ...] = ("concat", "separate")


class RegionFrames(Dataset):
    """Annotated frames with the inputs of one stage (see the module docstring for the keys).

    Args:
        records: the frames, in item order.
        input_size: (H, W) every map is resized to.
        frames_dir: folder of ``{video}.h5`` frames caches, or None (no ``rgb``).
        flow_dir: folder of flow caches, or None (no ``flow``).
        features_dir: folder of feature caches, or None (no ``features``).
        mask_dirs: folders of region masks caches.
        combine: how the regions of several ``mask_dirs`` make items: ``"concat"``, one item per
            frame with the regions of all concatenated; ``"separate"``, one item per frame and
            folder (the frame is seen once with each source's regions).
        labels: read the GT label maps (``actor``, ``action``).
        min_mask_score: regions of a non-``gt`` source scoring below this are dropped.
        flow_max_px: ``flow_to_rgb`` saturation in input pixels; None = per-image maximum.
    """

    def __init__(self, records: Sequence[FrameRecord], input_size: tuple[int, int], *,
                 frames_dir: str | Path | None = None, flow_dir: str | Path | None = None,
                 features_dir: str | Path | None = None, mask_dirs: Sequence[str | Path] = (),
                 labels: bool = True, min_mask_score: float = 0.0,
                 flow_max_px: float | None = None, combine: str = "concat") -> None:
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
        self.records = list(records)
        sources = list(range(len(mask_dirs)))
        # (record, mask folders of the item)
        self.items = ([(r, sources) for r in range(len(self.records))] if combine == "concat"
                      else [(r, [s]) for r in range(len(self.records)) for s in sources])
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.labels = labels
        self.min_mask_score = float(min_mask_score)
        self.flow_max_px = flow_max_px
        videos = sorted({r.video for r in self.records})
        # Readers open their HDF5 file on first read, so building them here only reads the
        # small index datasets; they are safe to pickle into DataLoader workers.
        self.frames: dict[str, FramesCache] = {}
        self.flows: dict[str, FlowCache] = {}
        self.features: dict[str, FeatureCache] = {}
        self.masks: list[dict[str, MasksFile]] = []
        for v in videos:
            if frames_dir is not None:
                self.frames[v] = read_frames_cache(Path(frames_dir) / f"{v}.h5")
            if flow_dir is not None:
                self.flows[v] = read_flow_cache(Path(flow_dir) / f"{v}.h5")
            if features_dir is not None:
                self.features[v] = read_feature_cache(Path(features_dir) / f"{v}.h5")
        for d in mask_dirs:
            self.masks.append({v: MasksFile(Path(d) / f"{v}.h5") for v in videos})
        self.use_frames = frames_dir is not None
        self.use_flow = flow_dir is not None
        self.use_features = features_dir is not None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r, sources = self.items[i]
        rec = self.records[r]
        size = self.input_size
        item: dict[str, Any] = {"video": rec.video, "frame": rec.frame}
        native: tuple[int, int] | None = None
        if self.use_frames:
            rgb = self.frames[rec.video].frame(rec.frame)
            native = rgb.shape[:2]
            rgb = _resize(rgb, size, cv2.INTER_LINEAR)
            item["rgb"] = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
        if self.use_flow:
            flow = self.flows[rec.video].flow(rec.frame)  # (H0, W0, 2) float32 px
            h0, w0 = flow.shape[:2]
            native = native or (h0, w0)
            flow = _resize(flow, size, cv2.INTER_LINEAR) * np.float32([size[1] / w0, size[0] / h0])
            img = flow_to_rgb(flow, self.flow_max_px)
            item["flow"] = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255.0)
        if self.use_features:
            item["features"] = torch.from_numpy(self.features[rec.video].features(rec.frame))
        if self.labels:
            label = read_annotation(rec.mat).label
            native = native or label.shape
            if self.use_frames and label.shape != tuple(native):
                raise DataError(rec.mat, f"GT size {label.shape} != frame size {tuple(native)}")
            actor, action = decode(_resize(label, size, cv2.INTER_NEAREST))
            item["actor"] = torch.from_numpy(actor.astype(np.int64))
            item["action"] = torch.from_numpy(action.astype(np.int64))
        if self.masks:
            parts = []
            for s in sources:
                mf = self.masks[s][rec.video]
                regions = mf.regions(rec.frame)
                if mf.source != "gt":
                    keep = regions["scores"] >= self.min_mask_score
                    regions = {k: v[keep] for k, v in regions.items()}
                native = native or regions["masks"].shape[1:]
                parts.append(regions)
            merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            merged = resize_regions(merged, size)
            item["boxes"] = torch.from_numpy(merged["boxes"])
            item["masks"] = torch.from_numpy(merged["masks"])
            item["region_labels"] = torch.from_numpy(merged["labels"])
        if native is None and self.use_features:
            native = self.features[rec.video].native_size
        item["native_size"] = torch.tensor(native if native is not None else size, dtype=torch.int64)
        return item


#: Keys stacked into a batch tensor; the rest are gathered into lists (variable region counts).
_STACKED = ("rgb", "flow", "features", "actor", "action", "native_size")


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack fixed-size tensors to (B, ...); lists for ids and per-frame region sets."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if key in _STACKED else values
    return out


def describe_batch(batch: dict[str, Any]) -> str:
    """``video/frame`` ids of a batch, for error messages."""
    return ", ".join(f"{v}/{f:05d}" for v, f in zip(batch["video"], batch["frame"]))
