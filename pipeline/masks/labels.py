"""Detector classes -> A2D actors.

A model trained by :mod:`pipeline.masks.train` predicts the A2D actors directly (class ``k`` is
actor ``k``, 1..7). A generic model does not: a torchvision COCO Mask R-CNN has 91 classes
(the COCO category ids, background 0). The "COCO" row of Dang et al.'s Table 3 uses such a
model's regions as they are, so for the ``checkpoint`` source every detection above the score
threshold is kept, whatever its class; its label is the A2D actor where one corresponds and 0
("no A2D actor", e.g. a COCO chair or bicycle) where none does. The region model reads the
mask, not the label, so unmapped regions still act as candidate regions.

A2D's adult and baby are both COCO "person": a COCO model cannot tell them apart, and persons
map to adult.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.masks.config import A2D_NUM_CLASSES

#: COCO category id (torchvision's 91-entry numbering) -> A2D actor id.
COCO_TO_A2D: dict[int, int] = {
    1: 1,   # person -> adult (baby is a person too; COCO cannot separate them)
    37: 3,  # sports ball -> ball
    16: 4,  # bird
    3: 5,   # car
    17: 6,  # cat
    18: 7,  # dog
}
#: Classes of torchvision's COCO detection models, background and "N/A" gaps included.
COCO_NUM_CLASSES = 91


def class_map_for(num_classes: int, override: Mapping[str | int, int] | None = None,
                  ) -> dict[int, int]:
    """The detector-class -> A2D-actor map of a model with ``num_classes`` classes.

    Args:
        num_classes: classes of the checkpoint's box predictor, background included.
        override: an explicit map (``segmenter.checkpoint_class_map``; JSON keys are strings).

    Returns:
        ``{detector class: actor 1..7}``; classes not in the map become 0.

    Raises:
        ValueError: when no map is given and ``num_classes`` is neither 8 (an A2D model) nor
            91 (a torchvision COCO model), or when a mapped actor is outside 0..7.
    """
    if override is not None:
        mapping = {int(k): int(v) for k, v in override.items()}
    elif num_classes == A2D_NUM_CLASSES:
        mapping = {k: k for k in range(1, A2D_NUM_CLASSES)}
    elif num_classes == COCO_NUM_CLASSES:
        mapping = dict(COCO_TO_A2D)
    else:
        raise ValueError(f"the checkpoint has {num_classes} classes, neither an A2D model (8) "
                         "nor a torchvision COCO model (91): set segmenter.checkpoint_class_map")
    bad = {k: v for k, v in mapping.items() if not 0 <= v < A2D_NUM_CLASSES}
    if bad:
        raise ValueError(f"class map targets must be A2D actors 0..7, got {bad}")
    return mapping


def map_labels(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """(N,) int64 detector classes -> (N,) int64 A2D actors (0 where unmapped)."""
    return np.array([mapping.get(int(c), 0) for c in labels], dtype=np.int64)
