"""Qualitative panel: a few test frames, one row each, side by side:

frame | GT colour map | each model's prediction (A2D palette) | region masks over the frame.

Inputs are the documented caches (``docs/architecture.md``): the release (GT ``.mat``), the
frames caches ``<frames_dir>/<video>.h5``, prediction caches ``<predictions>/<video>.h5`` (stage
``predict``) and a masks folder ``<masks_dir>/<video>.h5``. A panel whose input does not exist is
drawn grey with "not run"; a file that exists but is malformed is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.a2d.annotations import read_annotation
from pipeline.a2d.classes import label_to_rgb, pair_name
from pipeline.a2d.release import Release
from pipeline.errors import DataError
from pipeline.evaluate import PREDICT_FORMAT, PREDICT_STAGE
from pipeline.h5cache import open_cache
from pipeline.index import read_index
from pipeline.report.figures import plt, save


def select_frames(index: str | Path, n: int, split: str = "test") -> list[tuple[str, int]]:
    """``n`` (video, frame) pairs of ``split``: the middle annotated frame of ``n`` videos
    spread evenly over the sorted video list (deterministic; fewer if there are fewer videos)."""
    table = read_index(index)
    table = table[table.split == split]
    per_video = {str(v): sorted(int(f) for f in g.frame) for v, g in table.groupby("video")}
    vids = sorted(per_video)
    if not vids or n <= 0:
        return []
    picks = np.unique(np.linspace(0, len(vids) - 1, min(n, len(vids))).round().astype(int))
    return [(vids[i], per_video[vids[i]][len(per_video[vids[i]]) // 2]) for i in picks]


def read_prediction(path: Path, frame: int) -> np.ndarray | None:
    """(H, W) uint8 predicted ids of ``frame`` from a predict cache; None if the file is absent."""
    if not path.is_file():
        return None
    with open_cache(path, stage=PREDICT_STAGE, format_version=PREDICT_FORMAT) as f:
        ids = [int(i) for i in f["frame_ids"][:]]
        if frame not in ids:
            raise DataError(path, f"no prediction for frame {frame} (has {ids})")
        return np.asarray(f["labels"][ids.index(frame)])


def region_colour(i: int) -> np.ndarray:
    """A distinct saturated RGB colour for region ``i`` (golden-angle hue steps), float32."""
    hsv = np.uint8([[[int(i * 137.508) % 180, 220, 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def masks_overlay(image: np.ndarray, path: Path, frame: int) -> np.ndarray | None:
    """The frame with every region mask blended in its own colour and its box drawn; None if
    the masks file is absent."""
    if not path.is_file():
        return None
    from pipeline.masks.cache import read_masks_cache

    regions = read_masks_cache(path, [frame])[frame]
    if regions.size != image.shape[:2]:
        raise DataError(path, f"masks of size {regions.size}, frame is {image.shape[:2]}")
    out = image.astype(np.float32)
    for i in range(len(regions)):
        alpha = 0.55 * regions.masks[i].astype(np.float32)[..., None] / 255.0
        out = out * (1 - alpha) + region_colour(i) * alpha
    out = np.clip(out, 0, 255).astype(np.uint8)
    for i, box in enumerate(regions.boxes):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)),
                      tuple(int(c) for c in region_colour(i)), 1)
    return out


def _labels(label: np.ndarray) -> str:
    names = [pair_name(int(c)) for c in np.unique(label) if c]
    return ", ".join(names) if names else "background only"


def frame_panels(release: Release, video: str, frame: int, frames_dir: Path | None,
                 predictions: dict[str, Path], masks_dir: Path | None
                 ) -> list[tuple[str, np.ndarray | None, str]]:
    """``[(title, RGB image or None for "not run", caption)]`` for one row of the figure."""
    gt = read_annotation(release.mat(video, frame)).label
    image = None
    if frames_dir is not None and (frames_dir / f"{video}.h5").is_file():
        from pipeline.frames import read_frames_cache

        with read_frames_cache(frames_dir / f"{video}.h5") as cache:
            image = np.asarray(cache.frame(frame))
        if image.shape[:2] != gt.shape:
            raise DataError(frames_dir / f"{video}.h5", f"frame {image.shape[:2]} != GT {gt.shape}")
    panels = [(f"{video} #{frame}", image, ""), ("ground truth", label_to_rgb(gt), _labels(gt))]
    for name, folder in predictions.items():
        pred = read_prediction(folder / f"{video}.h5", frame)
        if pred is not None and pred.shape != gt.shape:
            raise DataError(folder / f"{video}.h5", f"prediction {pred.shape} != GT {gt.shape}")
        panels.append((name, None if pred is None else label_to_rgb(pred),
                       "" if pred is None else _labels(pred)))
    overlay = None
    if masks_dir is not None and image is not None:
        overlay = masks_overlay(image, masks_dir / f"{video}.h5", frame)
    panels.append((f"region masks ({masks_dir.name})" if masks_dir else "region masks",
                   overlay, ""))
    return panels


def qualitative_figure(release: str | Path, picks: list[tuple[str, int]], out: str | Path, *,
                       frames_dir: str | Path | None, predictions: dict[str, str | Path],
                       masks_dir: str | Path | None) -> Path:
    """Draw one row per (video, frame) of ``picks`` and write the PNG ``out``."""
    if not picks:
        raise ValueError("no frames to draw")
    rel = Release.at(release)
    preds = {k: Path(v) for k, v in predictions.items()}
    rows = [frame_panels(rel, v, f, Path(frames_dir) if frames_dir else None, preds,
                         Path(masks_dir) if masks_dir else None) for v, f in picks]
    ncols = len(rows[0])
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.4 * ncols, 2.2 * len(rows)),
                             squeeze=False)
    for r, panels in enumerate(rows):
        for c, (title, img, caption) in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.set_facecolor("#cccccc")
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes,
                        fontsize=9, color="#444444")
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            if caption:
                ax.set_xlabel(caption, fontsize=6, wrap=True)
    fig.tight_layout()
    return save(fig, out)
