"""The candidate regions of one frame, ``{b_i, M_i, score_i}`` (Dang et al. 2018, section 3.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.a2d.annotations import FrameAnnotation
from pipeline.errors import DataError


@dataclass
class Regions:
    """The N candidate regions of one frame of size (H, W).

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2``, frame pixels, 0-based, far corner exclusive.
        scores: (N,) float32 detection scores in 0..1 (1.0 for ground truth).
        labels: (N,) int64 A2D actor 1..7, or 0 where the detector class has no A2D actor.
        masks: (N, H, W) uint8 full-frame mask probability x 255.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frame."""
        return tuple(self.masks.shape[1:])  # type: ignore[return-value]

    @classmethod
    def empty(cls, height: int, width: int) -> Regions:
        """No region: a valid frame entry with N = 0."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0,), np.int64), np.zeros((0, height, width), np.uint8))

    def probabilities(self) -> np.ndarray:
        """(N, H, W) float32 mask probabilities in 0..1."""
        return self.masks.astype(np.float32) / 255.0

    def binary(self, threshold: float = 0.5) -> np.ndarray:
        """(N, H, W) bool masks, probability >= ``threshold``."""
        return self.masks >= np.uint8(round(threshold * 255))

    def validate(self, where: str | Path) -> Regions:
        """Check shapes, dtypes and value ranges; raise DataError naming ``where`` if wrong."""
        n = len(self.scores)
        checks = [(self.boxes, (n, 4), np.float32, "boxes"), (self.scores, (n,), np.float32, "scores"),
                  (self.labels, (n,), np.int64, "labels")]
        for arr, shape, dtype, name in checks:
            if arr.shape != shape or arr.dtype != dtype:
                raise DataError(where, f"{name} is {arr.dtype}{arr.shape}, expected "
                                       f"{np.dtype(dtype)}{shape}")
        if self.masks.ndim != 3 or self.masks.shape[0] != n or self.masks.dtype != np.uint8:
            raise DataError(where, f"masks is {self.masks.dtype}{self.masks.shape}, expected "
                                   f"uint8 ({n}, H, W)")
        if n and (not np.all(np.isfinite(self.boxes)) or np.any(self.scores < 0)
                  or np.any(self.scores > 1)):
            raise DataError(where, "non-finite boxes or scores outside 0..1")
        if n and (self.labels.min() < 0 or self.labels.max() > 7):
            raise DataError(where, f"labels outside 0..7: {sorted(set(self.labels.tolist()))}")
        return self


def regions_from_annotation(ann: FrameAnnotation) -> Regions:
    """The ground-truth instances of a frame as regions: score 1, mask 0 or 255, actor labels.

    Boxes are the annotation's: the tight box of each ``reMask`` instance, 0-based, far corner
    exclusive (:func:`pipeline.a2d.annotations.read_annotation` derives them from the masks and
    never reads ``reBBox``, whose layout is unconfirmed).
    """
    n = len(ann.ids)
    return Regions(boxes=ann.boxes.astype(np.float32).reshape(n, 4),
                   scores=np.ones((n,), np.float32),
                   labels=(ann.ids // 10).astype(np.int64),
                   masks=ann.masks.astype(np.uint8) * np.uint8(255))
