"""Spatial detection AP for actors, actions and actor-action pairs, and the zero-shot metrics.

Protocol (Kalogeiton et al. 2017, as reported by Ji et al. 2018, Table 2 and Fig. 4):

- Scoring: each frame's detections are scored per class as a detector would and duplicates
  suppressed by class-wise NMS at IoU 0.5 (:func:`pipeline.e2e.postprocess.detection_scores`:
  actor ``p(actor | box)``; action and joint ``p(actor | box) * p(action | box is an actor)``).
- Per class, detections of all frames are ranked by score; each is matched in its own frame,
  PASCAL VOC rule: to the GT of that class with the highest IoU; a TP if that IoU >= ``iou_thresh``
  (0.5) and the GT is not yet taken, otherwise an FP (a duplicate is an FP).
- IoU of boxes uses continuous coordinates with an exclusive far corner (torchvision's
  ``box_iou``), not VOC's ``+ 1``; ``iou_type="mask"`` uses mask IoU instead (masks >= 0.5).
- AP is the area under the precision-recall curve with **all-point interpolation** (VOC 2010+):
  precision is made monotone (each point takes the max precision at any higher recall) and
  summed over every recall step. mAP = mean AP over the classes that have GT.
- Settings: ``actor`` (7 classes), ``action`` (9), ``joint`` (the 43 valid pairs).
- A GT whose action is unknown (-1) counts in the actor setting only; in the action and joint
  settings it is an "ignore" region (VOC "difficult"): a detection matched to it is neither TP
  nor FP.
- Zero-shot (section 4.4): AP of an actor = mean joint AP over its valid actions
  (:func:`actor_pair_ap`); ``r_zs = AP_zero-shot / AP_full`` (:func:`zero_shot_ratio`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from pipeline.a2d.classes import NUM_ACTIONS, NUM_ACTORS, VALID_PAIRS
from pipeline.e2e.postprocess import DETECTION_NMS_IOU, detection_scores

__all__ = ["average_precision", "match_detections", "DetectionAP", "actor_pair_ap", "zero_shot_ratio"]

SETTINGS: dict[str, tuple[int, ...]] = {
    "actor": tuple(range(1, NUM_ACTORS + 1)),
    "action": tuple(range(1, NUM_ACTIONS + 1)),
    "joint": VALID_PAIRS,
}


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP of ranked detections.

    Args:
        scores: (D,) detection scores (any order; ties keep the given order).
        tp: (D,) bool, True for a true positive.
        num_gt: number of (non-ignored) GT instances; 0 gives NaN.
    """
    if num_gt == 0:
        return math.nan
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(tp, dtype=bool)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    recall = np.concatenate([[0.0], ctp / num_gt, [1.0]])
    precision = np.concatenate([[0.0], ctp / np.maximum(ctp + cfp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    step = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[step + 1] - recall[step]) * precision[step + 1]))


def match_detections(iou: Tensor, scores: Tensor, gt_ignore: Tensor, iou_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """VOC matching of one frame's detections of one class.

    Args:
        iou: (D, G) IoU between detections and GT.
        scores: (D,) detection scores.
        gt_ignore: (G,) bool, GT that neither count nor penalise.
        iou_thresh: minimum IoU of a match.

    Returns:
        tp (D,) bool and counted (D,) bool (False for detections matched to an ignored GT).
    """
    d, g = iou.shape
    tp = np.zeros(d, dtype=bool)
    counted = np.ones(d, dtype=bool)
    if g == 0:
        return tp, counted
    taken = np.zeros(g, dtype=bool)
    best_iou, best_gt = iou.max(dim=1)
    for i in torch.argsort(-scores, stable=True).tolist():
        j = int(best_gt[i])
        if float(best_iou[i]) < iou_thresh:
            continue
        if gt_ignore[j]:
            counted[i] = False
        elif not taken[j]:
            tp[i], taken[j] = True, True
    return tp, counted


def _mask_iou(a: Tensor, b: Tensor) -> Tensor:
    a = (a >= 0.5).flatten(1).float()
    b = (b >= 0.5).flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


class DetectionAP:
    """Accumulates detection matches frame by frame; :meth:`compute` gives AP and mAP.

    Args:
        iou_thresh: IoU of a true positive (0.5).
        iou_type: "box" or "mask" (matching; duplicates are always suppressed on boxes).
        nms_iou: IoU of the class-wise NMS of :func:`~pipeline.e2e.postprocess.detection_scores`
            (0.5); None scores every box, duplicates included.
    """

    def __init__(self, iou_thresh: float = 0.5, iou_type: str = "box",
                 nms_iou: float | None = DETECTION_NMS_IOU) -> None:
        if iou_type not in ("box", "mask"):
            raise ValueError(f"iou_type must be 'box' or 'mask', got {iou_type!r}")
        self.iou_thresh = iou_thresh
        self.iou_type = iou_type
        self.nms_iou = nms_iou
        self._scores = {s: {c: [] for c in cls} for s, cls in SETTINGS.items()}
        self._tp = {s: {c: [] for c in cls} for s, cls in SETTINGS.items()}
        self._num_gt = {s: dict.fromkeys(cls, 0) for s, cls in SETTINGS.items()}

    def update(self, pred: dict[str, Tensor], gt: dict[str, Tensor]) -> None:
        """Add one frame.

        Args:
            pred: ``boxes`` (D, 4), ``actor`` (D,) int64, ``actor_score`` (D,), ``action_probs``
                (D, 9) (a detections file's frame, :func:`pipeline.e2e.predict.read_detections`);
                ``masks`` (D, H, W) for mask IoU.
            gt: ``boxes`` (G, 4), ``actor`` (G,), ``action`` (G,) int64 (-1 = unknown); ``masks``
                (G, H, W) for mask IoU.
        """
        if self.iou_type == "box":
            iou = box_iou(pred["boxes"].float(), gt["boxes"].float())
        else:
            iou = _mask_iou(pred["masks"], gt["masks"])
        known = gt["action"] >= 1
        gt_keys = {
            "actor": (gt["actor"], torch.zeros_like(known)),
            "action": (gt["action"], ~known),
            "joint": (10 * gt["actor"] + gt["action"], ~known),
        }
        for setting, (g_cls, g_unknown) in gt_keys.items():
            det, p_cls, p_score = detection_scores(pred, setting, self.nms_iou)
            p_iou = iou[det]
            for c in SETTINGS[setting]:
                d = torch.where(p_cls == c)[0]
                # GT of the class, plus unknown-action GT that might be of this class (ignored)
                if setting == "joint":
                    maybe = g_unknown & (gt["actor"] == c // 10)
                else:
                    maybe = g_unknown
                g = torch.where((g_cls == c) | maybe)[0]
                self._num_gt[setting][c] += int(((g_cls == c) & ~g_unknown).sum())
                if len(d) == 0:
                    continue
                tp, counted = match_detections(p_iou[d][:, g], p_score[d], g_unknown[g],
                                               self.iou_thresh)
                self._scores[setting][c].append(p_score[d].detach().cpu().numpy()[counted])
                self._tp[setting][c].append(tp[counted])

    def compute(self) -> dict[str, dict]:
        """Returns ``{setting: {"ap": {class: AP or NaN without GT}, "map": mean over classes with
        GT (NaN if none)}}`` for settings actor, action, joint; AP in 0..1."""
        out: dict[str, dict] = {}
        for setting, classes in SETTINGS.items():
            ap = {}
            for c in classes:
                scores = np.concatenate(self._scores[setting][c]) if self._scores[setting][c] else np.zeros(0)
                tp = np.concatenate(self._tp[setting][c]) if self._tp[setting][c] else np.zeros(0, bool)
                ap[c] = average_precision(scores, tp, self._num_gt[setting][c])
            valid = [v for v in ap.values() if not math.isnan(v)]
            out[setting] = {"ap": ap, "map": float(np.mean(valid)) if valid else math.nan}
        return out


def actor_pair_ap(joint_ap: dict[int, float], actor: int) -> float:
    """Zero-shot AP of an actor: mean joint AP over its valid actions that have GT."""
    vals = [joint_ap.get(p, math.nan) for p in VALID_PAIRS if p // 10 == actor]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def zero_shot_ratio(ap_zero_shot: float, ap_full: float) -> float:
    """``r_zs = AP_zero-shot / AP_full`` (Ji et al. eq. 3); NaN when AP_full is 0 or NaN."""
    if math.isnan(ap_full) or ap_full == 0:
        return math.nan
    return ap_zero_shot / ap_full
