"""Training and evaluation samples of the segmenter: annotated frames and their GT instances.

Images come from the frames caches (``results/frames/{video}.h5``, :mod:`pipeline.frames`),
instances from the ``.mat`` annotations (:func:`pipeline.a2d.annotations.read_annotation`). A
sample is keyed by ``(position, flip)``: which frame, and whether to mirror it. The trainer
draws both from a seeded generator per step (:func:`step_batches`), so the data seen at step
``s`` does not depend on whether the run was interrupted and resumed before ``s``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.a2d.annotations import FrameAnnotation, read_annotation
from pipeline.errors import DataError
from pipeline.frames import read_frames_cache


@dataclass(frozen=True)
class FrameRef:
    """One annotated frame: where its image and its annotation are."""

    video: str
    frame: int
    frames_h5: Path
    mat: Path

    def __str__(self) -> str:
        return f"video {self.video!r} frame {self.frame}"


def frame_refs(index: pd.DataFrame, release: str | Path, frames_dir: str | Path,
               split: str | None = None, videos: list[str] | None = None) -> list[FrameRef]:
    """The annotated frames of the index (optionally one split / some videos), in index order.

    Args:
        index: the frame index (:func:`pipeline.index.read_index`).
        release: the A2D ``Release/`` folder the index's ``mat`` paths are relative to.
        frames_dir: folder of the frames caches ``{video}.h5``.
    """
    rows = index
    if split is not None:
        rows = rows[rows.split == split]
    if videos is not None:
        rows = rows[rows.video.isin(videos)]
    return [FrameRef(str(r.video), int(r.frame), Path(frames_dir) / f"{r.video}.h5",
                     Path(release) / str(r.mat)) for r in rows.itertuples()]


def read_image(ref: FrameRef) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the frame, from its video's frames cache."""
    with read_frames_cache(ref.frames_h5) as cache:
        if ref.frame not in cache:
            raise DataError(ref.frames_h5, f"annotated frame {ref.frame} is not cached")
        return np.asarray(cache.frame(ref.frame))


def instance_target(ann: FrameAnnotation) -> dict[str, torch.Tensor]:
    """GT instances of a frame as a torchvision detection target.

    Instances with an empty mask or a degenerate box are left out: torchvision's Mask R-CNN
    rejects boxes of zero width or height, and an empty mask teaches nothing. (An annotation from
    :func:`pipeline.a2d.annotations.read_annotation` has neither: its boxes are the masks' tight
    boxes; this guards annotations built in memory.)

    Returns:
        ``boxes`` (N, 4) float32 (clipped to the frame), ``labels`` (N,) int64 actors 1..7,
        ``masks`` (N, H, W) uint8 0/1.
    """
    h, w = ann.label.shape
    boxes = ann.boxes.astype(np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            & ann.masks.reshape(len(boxes), -1).any(axis=1))
    return {"boxes": torch.from_numpy(boxes[keep]),
            "labels": torch.from_numpy((ann.ids[keep] // 10).astype(np.int64)),
            "masks": torch.from_numpy(ann.masks[keep].astype(np.uint8))}


def hflip(image: torch.Tensor, target: dict[str, torch.Tensor],
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mirror a (3, H, W) image and its target left-right (boxes are far-corner exclusive)."""
    w = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


class InstanceFrames(torch.utils.data.Dataset):
    """Annotated frames with their GT instances.

    ``dataset[(i, flip)]`` -> ``(image, target, ref)``: image (3, H, W) float32 in 0..1, the
    target of :func:`instance_target` (mirrored when ``flip``), and the :class:`FrameRef`.
    Files are opened per item, so the dataset pickles into DataLoader workers.
    """

    def __init__(self, refs: list[FrameRef]) -> None:
        if not refs:
            raise ValueError("no annotated frames to train or evaluate on")
        self.refs = refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, dict, FrameRef]:
        i, flip = key
        ref = self.refs[i]
        image = read_image(ref)
        ann = read_annotation(ref.mat)
        if ann.label.shape != image.shape[:2]:
            raise DataError(ref.mat, f"annotation is {ann.label.shape}, frame {ref.frame} of "
                                     f"{ref.frames_h5} is {image.shape[:2]}")
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        target = instance_target(ann)
        if flip:
            tensor, target = hflip(tensor, target)
        return tensor, target, ref


def step_batches(n: int, batch_size: int, seed: int, start: int, stop: int,
                 flip: bool) -> Iterator[list[tuple[int, bool]]]:
    """The batches of steps ``start .. stop-1``: lists of ``(position, flip)`` keys.

    Each epoch is a permutation of ``0..n-1`` drawn from ``seed + epoch``; step ``s`` takes the
    ``s``-th run of ``batch_size`` positions of the concatenated epochs (an epoch's remainder
    joins the next epoch's first batch), so any step's batch is known without replaying the
    steps before it. Flips are drawn per step from ``(seed, step)``.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got {n}, {batch_size}")
    perms: dict[int, np.ndarray] = {}

    def position(k: int) -> int:
        epoch, offset = divmod(k, n)
        if epoch not in perms:
            perms.clear()  # at most two epochs are needed at a time
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        return int(perms[epoch][offset])

    for step in range(start, stop):
        flips = np.random.default_rng([seed, 1_000_003, step]).random(batch_size) < 0.5
        yield [(position(step * batch_size + j), bool(flip and flips[j]))
               for j in range(batch_size)]


def collate(batch: list[tuple[torch.Tensor, dict, FrameRef]],
            ) -> tuple[list[torch.Tensor], list[dict], list[FrameRef]]:
    """Keep images as a list: Mask R-CNN batches images of different sizes itself."""
    images, targets, refs = zip(*batch)
    return list(images), list(targets), list(refs)
