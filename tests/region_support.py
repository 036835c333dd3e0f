"""Upstream caches of the region-model tests, built from the tiny synthetic release.

Frames and flow come from the real stages (``pipeline.frames``, ``pipeline.flow``, DIS
ultrafast). Region masks are written in the documented ``masks`` layout
(``docs/architecture.md``) from the GT instances: source ``gt`` as is, source ``model`` as a
stand-in for a trained segmenter's output (each mask dilated, blurred, scored 0.9, plus one
spurious low-score background region), so the tests do not depend on training Mask R-CNN.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.a2d.annotations import read_annotation
from pipeline.config import stage_config
from pipeline.flow.stage import FlowConfig, compute_flow
from pipeline.frames import FramesConfig, cache_video
from pipeline.masks.cache import write_masks_cache
from pipeline.masks.regions import Regions
from pipeline.index import DatasetConfig, build_index, read_index


def write_masks(path: Path, video: str, frames: dict[int, dict[str, np.ndarray]],
                source: str) -> None:
    """``frames``: id -> boxes (N, 4), scores (N,), labels (N,), masks (N, H, W) uint8."""
    regions = {fid: Regions(**r) for fid, r in frames.items()}
    h, w = next(iter(frames.values()))["masks"].shape[1:]
    write_masks_cache(path, regions, video=video, source=source, config={"test": source},
                      height=h, width=w)


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def regions_from_gt(mat: Path, source: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ann = read_annotation(mat)
    h, w = ann.label.shape
    masks, boxes, labels, scores = [], [], [], []
    for m, pair in zip(ann.masks, ann.ids):
        if not m.any():
            continue
        m = m.astype(np.uint8) * 255
        if source == "model":
            m = cv2.GaussianBlur(cv2.dilate(m, np.ones((3, 3), np.uint8)), (5, 5), 1.0)
        masks.append(m)
        boxes.append(_box(m > 0))
        labels.append(int(pair) // 10)
        scores.append(1.0 if source == "gt" else 0.9)
    if source == "model":  # a spurious detection on the background, low score
        m = np.zeros((h, w), np.uint8)
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        m[y:y + h // 4, x:x + w // 4] = 200
        masks.append(m)
        boxes.append(_box(m > 0))
        labels.append(int(rng.integers(1, 8)))
        scores.append(0.3)
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, np.float32), "labels": np.asarray(labels, np.int64),
            "masks": np.asarray(masks, np.uint8).reshape(-1, h, w)}


def build_caches(release: Path, root: Path) -> dict[str, Path]:
    """Index, frames, flow and masks (gt, model) caches of every video under ``root``."""
    paths = {"release": release, "index": root / "index.csv", "frames": root / "frames",
             "flow": root / "flow", "masks": root / "masks"}
    if (root / "done").exists():
        return paths
    table, _ = build_index(DatasetConfig(str(release), None, "fail", None))
    table.to_csv(paths["index"], index=False)
    table = read_index(paths["index"])
    fcfg = stage_config(FramesConfig, "frames", {"context": 0})
    flcfg = stage_config(FlowConfig, "flow", {"backend": "dis", "dis_preset": "ultrafast"})
    rng = np.random.default_rng(0)
    for video, rows in table.groupby("video"):
        frames = cache_video(release, paths["index"], video, paths["frames"] / f"{video}.h5", fcfg)
        compute_flow(frames, paths["flow"] / f"{video}.h5", flcfg)
        for source in ("gt", "model"):
            regions = {int(r.frame): regions_from_gt(release / r.mat, source, rng)
                       for r in rows.itertuples()}
            write_masks(paths["masks"] / source / f"{video}.h5", video, regions, source)
    (root / "done").touch()
    return paths
