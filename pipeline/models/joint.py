"""Post-processing: actor and action logits -> joint actor-action label maps.

Dang et al. (section 3.3): "the joint actor-action probability is the element-wise product of
the two probability vectors". A pixel's label is the arg-max of that product over the 44 joint
classes of the evaluation (``pipeline.a2d.classes.JOINT_IDS``): background and the 43 valid
pairs. Invalid pairs (e.g. ball-eating) and mixed background/non-background combinations are
never output; their probability mass is simply not a candidate.

Background probability (``background=``):

- ``"product"`` (default): ``p_actor(0) * p_action(0)``, the same product rule as every pair,
  matching training, where background pixels carry actor 0 *and* action 0.
- ``"actor"``: ``p_actor(0)``, background decided by the actor head alone (the action head's
  background is then ignored); useful when the action head is much less certain.

The arg-max is taken over log-probabilities (``log_softmax`` sums), which is the same arg-max
as over the products but never underflows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.a2d.classes import JOINT_IDS, NUM_ACTIONS, NUM_ACTORS, VALID_PAIRS

__all__ = ["joint_labels", "joint_log_probs", "resize_logits"]

_PAIR_ACTOR = torch.tensor([p // 10 for p in VALID_PAIRS])
_PAIR_ACTION = torch.tensor([p % 10 for p in VALID_PAIRS])
_JOINT_IDS = torch.tensor(JOINT_IDS, dtype=torch.uint8)
BACKGROUNDS = ("product", "actor")


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, K, h, w) logits -> (B, K, *size), bilinear, ``align_corners=False``.

    Logits (not probabilities) are interpolated, as torchvision's segmentation models do; the
    softmax is taken afterwards at the target resolution.
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def joint_log_probs(
    actor_logits: Tensor, action_logits: Tensor, background: str = "product"
) -> Tensor:
    """Log joint probabilities of the 44 joint classes.

    Args:
        actor_logits: (B, 1 + NUM_ACTORS, H, W) float logits, background first.
        action_logits: (B, 1 + NUM_ACTIONS, H, W) float logits, background first.
        background: "product" or "actor" (module docstring).

    Returns:
        (B, 44, H, W) float, channel c is ``log p(JOINT_IDS[c])``.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if actor_logits.shape[1] != 1 + NUM_ACTORS or action_logits.shape[1] != 1 + NUM_ACTIONS:
        raise ValueError(
            f"expected {1 + NUM_ACTORS} actor and {1 + NUM_ACTIONS} action channels, got "
            f"{actor_logits.shape[1]} and {action_logits.shape[1]}"
        )
    if actor_logits.shape[-2:] != action_logits.shape[-2:]:
        raise ValueError(
            f"actor {tuple(actor_logits.shape)} and action {tuple(action_logits.shape)} "
            "sizes differ"
        )
    log_actor = F.log_softmax(actor_logits.float(), dim=1)
    log_action = F.log_softmax(action_logits.float(), dim=1)
    device = actor_logits.device
    pairs = log_actor[:, _PAIR_ACTOR.to(device)] + log_action[:, _PAIR_ACTION.to(device)]
    bg = log_actor[:, :1]
    if background == "product":
        bg = bg + log_action[:, :1]
    return torch.cat([bg, pairs], dim=1)


def joint_labels(
    actor_logits: Tensor,
    action_logits: Tensor,
    output_size: tuple[int, int] | None = None,
    background: str = "product",
) -> Tensor:
    """Joint label maps ``10 * actor + action`` (0 = background), only valid pairs.

    Args:
        actor_logits: (B, 8, h, w) float logits.
        action_logits: (B, 10, h, w) float logits.
        output_size: (H, W) to resize the logits to first (the clip's native size); None keeps
            (h, w).
        background: "product" or "actor" (module docstring).

    Returns:
        (B, H, W) uint8 joint ids, every one in ``JOINT_IDS``.
    """
    if output_size is not None:
        actor_logits = resize_logits(actor_logits, output_size)
        action_logits = resize_logits(action_logits, output_size)
    index = joint_log_probs(actor_logits, action_logits, background).argmax(dim=1)
    return _JOINT_IDS.to(index.device)[index]
