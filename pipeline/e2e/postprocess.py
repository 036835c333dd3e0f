"""From model outputs to scored actor-action instances, A2D label maps and detections for mAP.

Rules (all documented here once, tested in ``tests/test_e2e_postprocess.py``):

- **Action of an instance**: the most probable action among those valid for its actor
  (:data:`pipeline.a2d.classes.VALID_PAIRS`), so every instance is one of the 43 valid pairs.
  Every actor has at least four valid actions ("none" among them), so there is always one.
- **Instance scores** (label maps, the detections file): ``actor_score`` from the actor
  classifier, ``action_score`` = p(action | actor RoI) of the chosen action, joint
  ``score = actor_score * action_score``.
- **Detection scores for mAP** (:func:`detection_scores`), as a detector reports them: every
  detection is a box for each class it may be, scored by the probability that the box *is* that
  class. torchvision's box head emits one copy of a RoI per actor class (own box, own
  ``actor_score`` = p(actor | box)); ``action_probs`` is p(action | box is an actor), so

  - actor a: ``p(a | box)``;
  - action b: ``p(a | box) * p(b | box is an actor)`` for the copy's actor a, b valid for a;
  - joint (a, b): the same product, class ``10 * a + b``, valid pairs only.

  Actions are not restricted to the chosen one: the second-best action of a box is a (lower
  scored) detection too. Scores of 0 are no detection (the pair baseline's one-hot actions).
  Duplicates are then suppressed per scored class by NMS at IoU :data:`DETECTION_NMS_IOU`
  (0.5, the matching IoU of the protocol): the copies of one RoI are one action detection, not
  several, and a background box (low actor score) cannot rank above an actor.
- **No mask head**: an instance's mask is its box filled (pixels whose centre lies inside).
- **Label map**: instances with ``actor_score < score_thresh`` are dropped; the rest are painted
  in increasing ``actor_score`` order (ties: input order) wherever their mask probability is
  ``>= mask_thresh``, so on overlaps the highest-scoring instance wins; unpainted pixels are
  background 0. The actor score ranks instances because it is the detection confidence; the
  action only names the pair.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from pipeline.a2d.classes import NUM_ACTIONS
from pipeline.e2e.labels import valid_action_table

__all__ = ["select_actions", "boxes_to_masks", "to_instances", "instances_to_label_map",
           "detection_scores", "DETECTION_NMS_IOU", "DETECTION_SETTINGS"]

#: IoU above which (strictly, torchvision's ``nms``) a lower-scored box of the same scored class
#: is a duplicate.
DETECTION_NMS_IOU = 0.5
DETECTION_SETTINGS = ("actor", "action", "joint")


def select_actions(actor: Tensor, action_probs: Tensor, valid_only: bool = True) -> tuple[Tensor, Tensor]:
    """Best action per instance.

    Args:
        actor: (N,) int64 1..7.
        action_probs: (N, 9) float, columns = actions 1..9.
        valid_only: restrict to actions that form a valid pair with the actor.

    Returns:
        action (N,) int64 1..9 and its probability (N,) float32.
    """
    probs = action_probs.float()
    if valid_only:
        valid = valid_action_table().to(actor.device)[actor, 1:]  # (N, 9)
        probs = probs.masked_fill(~valid, -1.0)
    score, idx = probs.max(dim=1) if len(probs) else (probs.new_zeros(0), actor.new_zeros(0))
    return idx + 1, score


def boxes_to_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 4) xyxy boxes (far corner exclusive) -> (N, H, W) float32 masks, 1 where the pixel
    centre lies inside the box: the box-to-mask step of the "w/o mask" ablation."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32, device=boxes.device) + 0.5
    xs = torch.arange(w, dtype=torch.float32, device=boxes.device) + 0.5
    b = boxes.float()[:, :, None]  # (N, 4, 1)
    inside_x = (xs >= b[:, 0]) & (xs < b[:, 2])  # (N, W)
    inside_y = (ys >= b[:, 1]) & (ys < b[:, 3])  # (N, H)
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()


def to_instances(output: dict[str, Tensor], size: tuple[int, int], valid_only: bool = True) -> dict[str, Tensor]:
    """One frame's model output -> scored instances.

    Args:
        output: ``boxes`` (N, 4), ``actor`` (N,), ``actor_score`` (N,), ``action_probs`` (N, 9),
            optionally ``masks`` (N, H, W) probabilities.
        size: (H, W) of the frame (used when there are no masks).
        valid_only: see :func:`select_actions`.

    Returns:
        ``boxes``, ``actor``, ``actor_score``, ``action`` (N,) int64 1..9, ``action_score``,
        ``score`` (N,) joint = actor_score * action_score, ``masks`` (N, H, W) float32.
    """
    action, action_score = select_actions(output["actor"], output["action_probs"], valid_only)
    masks = output["masks"].float() if "masks" in output else boxes_to_masks(output["boxes"], size)
    return {
        "boxes": output["boxes"], "actor": output["actor"], "actor_score": output["actor_score"],
        "action": action, "action_score": action_score,
        "score": output["actor_score"] * action_score, "masks": masks,
    }


def instances_to_label_map(
    instances: dict[str, Tensor],
    size: tuple[int, int],
    score_thresh: float = 0.5,
    mask_thresh: float = 0.5,
) -> np.ndarray:
    """Paint instances into an (H, W) uint8 map of joint ids ``10 * actor + action``.

    See the module docstring for the overlap, threshold and validity rules.
    """
    if instances["masks"].shape[1:] != tuple(size):
        raise ValueError(f"masks are {tuple(instances['masks'].shape[1:])}, the map is {tuple(size)}")
    label = torch.zeros(size, dtype=torch.uint8)
    keep = torch.where(instances["actor_score"] >= score_thresh)[0]
    order = keep[torch.argsort(instances["actor_score"][keep], stable=True)]
    joint = 10 * instances["actor"] + instances["action"]
    for i in order.tolist():  # lowest score first, so higher scores overwrite it
        fg = instances["masks"][i].cpu() >= mask_thresh
        label[fg] = int(joint[i])
    return label.numpy()


def detection_scores(pred: dict[str, Tensor], setting: str,
                     nms_iou: float | None = DETECTION_NMS_IOU) -> tuple[Tensor, Tensor, Tensor]:
    """Scored per-class detections of one frame for mAP (rules in the module docstring).

    Args:
        pred: ``boxes`` (D, 4) xyxy, ``actor`` (D,) int64 1..7, ``actor_score`` (D,) =
            p(actor | box), ``action_probs`` (D, 9) = p(action 1..9 | box is an actor).
        setting: "actor", "action" or "joint".
        nms_iou: IoU of class-wise NMS; None keeps every box (no suppression).

    Returns:
        ``det`` (K,) int64 row of ``pred`` each detection comes from, ``cls`` (K,) int64 its
        class (actor 1..7, action 1..9 or joint ``10 * actor + action``) and ``score`` (K,)
        float32, by decreasing score.
    """
    actor = pred["actor"].long()
    actor_score = pred["actor_score"].float()
    if setting == "actor":
        det, cls, score = torch.arange(len(actor), device=actor.device), actor, actor_score
    elif setting in ("action", "joint"):
        probs = pred["action_probs"].float().reshape(len(actor), NUM_ACTIONS)
        det, col = torch.where(valid_action_table().to(actor.device)[actor, 1:])
        cls = col + 1 if setting == "action" else 10 * actor[det] + col + 1
        score = actor_score[det] * probs[det, col]
    else:
        raise ValueError(f"setting must be one of {DETECTION_SETTINGS}, got {setting!r}")
    keep = score > 0
    det, cls, score = det[keep], cls[keep], score[keep]
    if nms_iou is None:
        order = torch.argsort(-score, stable=True)
    else:
        order = batched_nms(pred["boxes"].float()[det], score, cls, nms_iou)
    return det[order], cls[order], score[order]
