"""The multitask loss of Ji et al. 2018, eq. (1):

    L = l1 L_RoI-cls + l2 L_box-reg + l3 L_actor-cls + l4 L_action-cls + l5 L_mask

The individual terms are computed where their targets are sampled (the RPN and the RoI heads,
as in torchvision's detection models) and returned as a dict with ``loss_*`` keys, all on the
annotated centre frame only:

==================  =============================================================
``loss_objectness``  RPN anchor classification (the paper's L_RoI-cls)
``loss_rpn_box_reg`` RPN box regression (part of the RPN loss of Faster R-CNN)
``loss_box_reg``     class-specific box regression of the RoI head (L_box-reg)
``loss_actor``       actor classification, bg + 7 (or bg + 43 pairs for the baseline)
``loss_action``      action classification, bg + 9, ignored actions skipped (L_action-cls)
``loss_mask``        per-pixel BCE on the GT actor's mask (L_mask)
==================  =============================================================

:class:`MultitaskLoss` sums them with explicit weights and refuses non-finite values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.e2e.labels import IGNORE_ACTION

__all__ = ["action_loss", "MultitaskLoss"]


def action_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross entropy of (R, 10) action logits against (R,) int64 labels 0..9 (0 = background).

    RoIs labelled :data:`IGNORE_ACTION` (matched to an instance whose action is unknown or
    withheld for zero-shot) do not count; with none left the loss is an exact, differentiable 0.
    """
    keep = labels != IGNORE_ACTION
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep])


class MultitaskLoss:
    """Weighted sum of the model's loss terms.

    Args:
        rpn_objectness, rpn_box, box, actor, action, mask: the weights of ``loss_objectness``,
            ``loss_rpn_box_reg``, ``loss_box_reg``, ``loss_actor``, ``loss_action``,
            ``loss_mask`` (the paper's lambda_1..5, with the RPN split into its two terms).

    Calling it with the model's loss dict returns the scalar total. A term the model does not
    produce (``loss_action`` of the baseline, ``loss_mask`` without a mask head) is skipped; a
    term without a weight raises KeyError, so no loss can be silently dropped.
    """

    def __init__(
        self,
        *,
        rpn_objectness: float = 1.0,
        rpn_box: float = 1.0,
        box: float = 1.0,
        actor: float = 1.0,
        action: float = 1.0,
        mask: float = 1.0,
    ) -> None:
        self.weights = {
            "loss_objectness": rpn_objectness,
            "loss_rpn_box_reg": rpn_box,
            "loss_box_reg": box,
            "loss_actor": actor,
            "loss_action": action,
            "loss_mask": mask,
        }

    def __call__(self, losses: dict[str, Tensor]) -> Tensor:
        unknown = set(losses) - set(self.weights)
        if unknown:
            raise KeyError(f"no weight for loss term(s) {sorted(unknown)}; known: {sorted(self.weights)}")
        bad = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v).all()}
        if bad:
            # the training loop decides what to do (DETR / torchvision references stop the run)
            raise FloatingPointError(f"non-finite loss term(s): {bad}")
        total = sum(self.weights[k] * v for k, v in losses.items())
        if not isinstance(total, Tensor) or not math.isfinite(float(total.detach())):
            raise FloatingPointError(f"non-finite total loss from {losses}")
        return total
