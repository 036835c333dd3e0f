"""Training loss of Dang et al. (Eq. 1): actor + action pixel cross-entropies.

``L_j = -log p_actor,j(o_actor,j) - log p_action,j(o_action,j)``, averaged over labelled pixels
(each term separately, so both tasks weigh the same whatever the ignore pattern). The two terms
are returned separately (``loss_actor``, ``loss_action``) and combined with an explicit weight
dict by :func:`weighted_total`; Eq. 1 is weights 1 and 1.

Resolution: models predict at stride 8 (baseline) or at any requested size (region back-end).
By default logits are upsampled bilinearly (``align_corners=False``) to the label size, so the
loss is measured where evaluation is (torchvision / mmsegmentation practice). The alternative,
``resize="labels"``, downsamples the labels with nearest neighbour to the logits' size, as
DeepLab-v2's Caffe training did: cheaper, but thin actors can vanish from the labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EQ1_WEIGHTS", "IGNORE_INDEX", "SegmentationLoss", "check_finite", "weighted_total"]

#: Label value excluded from the loss (A2D GT has none; padding and augmentation may add it).
IGNORE_INDEX = 255

#: Eq. 1: the two cross-entropies summed with equal weight.
EQ1_WEIGHTS: Mapping[str, float] = MappingProxyType({"loss_actor": 1.0, "loss_action": 1.0})

TASKS = ("actor", "action")


def _resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    # Nearest on float is exact for small integers; interpolate has no integer kernel.
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


class SegmentationLoss(nn.Module):
    """Per-task pixel cross-entropy (Eq. 1).

    Args:
        resize: "logits" (upsample logits to the labels, default) or "labels" (downsample
            labels to the logits, nearest).
        ignore_index: label value that contributes no loss.

    ``forward(outputs, targets)``: ``outputs["actor"|"action"]`` (B, K, h, w) float logits;
    ``targets["actor"|"action"]`` (B, H, W) integer labels (0 = background). Returns
    ``{"loss_actor": scalar, "loss_action": scalar}``. A term whose labels are all ignored is 0
    (with a gradient of 0), not NaN.
    """

    def __init__(self, resize: str = "logits", ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if resize not in ("logits", "labels"):
            raise ValueError(f"resize must be 'logits' or 'labels', got {resize!r}")
        self.resize = resize
        self.ignore_index = ignore_index

    def forward(
        self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        losses = {}
        for task in TASKS:
            logits, labels = outputs[task], targets[task].long()
            if logits.shape[0] != labels.shape[0] or labels.ndim != 3:
                raise ValueError(
                    f"{task}: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
                    f"do not pair as (B, K, h, w) and (B, H, W)"
                )
            if logits.shape[-2:] != labels.shape[-2:]:
                if self.resize == "logits":
                    logits = F.interpolate(
                        logits, size=labels.shape[-2:], mode="bilinear", align_corners=False
                    )
                else:
                    labels = _resize_labels(labels, tuple(logits.shape[-2:]))
            valid = labels != self.ignore_index
            if not valid.any():
                losses[f"loss_{task}"] = logits.sum() * 0.0
                continue
            losses[f"loss_{task}"] = F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        return losses


def weighted_total(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``sum_k weights[k] * losses[k]``; every loss needs a weight (no silent drop)."""
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise KeyError(f"no weight for loss term(s) {missing}; weights: {dict(weights)}")
    return torch.stack([weights[k] * v for k, v in losses.items()]).sum()


def check_finite(losses: Mapping[str, Tensor | float], step: int | str) -> None:
    """Raise FloatingPointError naming ``step`` and the values if any loss is NaN or inf."""
    values = {k: float(v.detach() if isinstance(v, Tensor) else v) for k, v in losses.items()}
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        raise FloatingPointError(f"non-finite loss at step {step}: {bad} in {values}")
