"""Inputs of the masks tests: index and frames caches of the tiny synthetic release, built by
the real stages (``pipeline.index``, ``pipeline.frames``), and a drawn-shapes release small
enough to train Mask R-CNN on within a test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.a2d.annotations import FrameAnnotation, write_mat
from pipeline.config import stage_config
from pipeline.frames import FramesConfig, cache_video, write_frames_cache
from pipeline.index import COLUMNS, DatasetConfig, build_index, read_index


def build_inputs(release: Path, root: Path) -> dict[str, Path]:
    """Index CSV and frames caches (``root/frames/{video}.h5``) of every video of ``release``."""
    paths = {"release": release, "index": root / "index.csv", "frames": root / "frames"}
    if (root / "done").exists():
        return paths
    table, _ = build_index(DatasetConfig(str(release), None, "fail", None))
    table.to_csv(paths["index"], index=False)
    cfg = stage_config(FramesConfig, "frames", {"context": 0})
    for video in read_index(paths["index"]).video.unique():
        cache_video(release, paths["index"], video, paths["frames"] / f"{video}.h5", cfg)
    (root / "done").touch()
    return paths


def shapes_frame(rng: np.random.Generator, h: int, w: int,
                 actors: list[int]) -> tuple[np.ndarray, FrameAnnotation]:
    """An (H, W, 3) uint8 frame of noisy background with one filled ellipse per actor (its
    colour tells the actor), and its annotation (action 9, "none")."""
    image = (rng.random((h, w, 3)) * 60 + 60).astype(np.uint8)
    label = np.zeros((h, w), np.uint8)
    masks, boxes = [], []
    for actor in actors:
        m = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(12, w - 12)), int(rng.integers(12, h - 12)))
        axes = (int(rng.integers(5, 11)), int(rng.integers(5, 11)))
        cv2.ellipse(m, center, axes, 0, 0, 360, 1, -1)
        m = m.astype(bool) & (label == 0)  # later actors are occluded by earlier ones
        colour = [(220, 40, 40), (40, 200, 40), (40, 40, 220)][actor % 3]
        image[m] = colour
        label[m] = 10 * actor + 9
        ys, xs = np.nonzero(m)
        masks.append(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    ann = FrameAnnotation(label=label, masks=np.asarray(masks, bool).reshape(-1, h, w),
                          boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                          ids=np.array([10 * a + 9 for a in actors], np.int64))
    return image, ann


def shapes_dataset(root: Path, videos: dict[str, str], h: int = 40, w: int = 56,
                   frames_per_video: int = 2, seed: int = 0) -> dict[str, Path]:
    """Index CSV, ``.mat`` annotations and frames caches of drawn-shape videos.

    Args:
        videos: ``{video id: split}``. Every frame holds an adult and a ball (actors 1, 3).
    """
    rng = np.random.default_rng(seed)
    release, frames_dir = root / "Release", root / "frames"
    rows = []
    for video, split in videos.items():
        images = {}
        for frame in range(1, frames_per_video + 1):
            images[frame], ann = shapes_frame(rng, h, w, [1, 3])
            mat = release / "Annotations" / "mat" / video / f"{frame:05d}.mat"
            write_mat(mat, ann)
            rows.append({"video": video, "frame": frame, "split": split, "label": 19,
                         "height": h, "width": w, "n_frames": frames_per_video,
                         "clip": f"clips320H/{video}.mp4", "mat": str(mat.relative_to(release)),
                         "col": "", "instance_h5": ""})
        write_frames_cache(frames_dir / f"{video}.h5", video=video, split=split, frames=images,
                           annotated=sorted(images), n_frames=frames_per_video, fps=24.0,
                           cfg=FramesConfig(context=0))
    index = root / "index.csv"
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(index, index=False)
    return {"release": release, "index": index, "frames": frames_dir}
