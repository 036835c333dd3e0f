"""Instance mask quality: COCO-style mask AP and the mean best IoU of the GT instances.

AP follows the COCO evaluator (``pycocotools.cocoeval``, ``iouType="segm"``), without crowd
regions or area ranges: per class and IoU threshold, detections of each image are matched in
decreasing score order to the unmatched GT instance of highest IoU at or above the threshold;
the detections of all images are then ranked by score, precision is made monotone, and AP is
the mean precision at the 101 recall points 0, 0.01, ..., 1. Classes with no GT instance are
left out of the mean; a class with GT but no detection scores 0. ``ap`` averages the thresholds
0.5:0.05:0.95 (COCO's "AP"), ``ap50`` is the threshold 0.5.

The mean best IoU (average best overlap of region proposals) asks, for each GT instance, how well
the best predicted mask of any class covers it: it is what the region model needs from its
candidate regions, whatever their labels.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

#: COCO's IoU thresholds, built as pycocotools builds them (0.6 is 0.6000000000000001 there).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = 100  # per image and class, as COCO's maxDets[-1]


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, H, W) bool x (M, H, W) bool -> (N, M) float64 IoU (0 where the union is empty)."""
    pixels = int(np.prod(pred.shape[1:] if len(pred) else gt.shape[1:]))
    p = pred.reshape(len(pred), pixels).astype(np.float64)
    g = gt.reshape(len(gt), pixels).astype(np.float64)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, M) IoUs of score-sorted detections vs GT -> (T, N) bool: detection is a TP."""
    n, m = ious.shape
    tp = np.zeros((len(thresholds), n), dtype=bool)
    for t, thr in enumerate(thresholds):
        taken = np.zeros(m, dtype=bool)
        for d in range(n):
            best, best_iou = -1, min(thr, 1 - 1e-10)
            for g in range(m):
                if not taken[g] and ious[d, g] >= best_iou:
                    best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
                tp[t, d] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> np.ndarray:
    """COCO 101-point AP per threshold.

    Args:
        scores: (D,) detection scores over all images.
        tp: (T, D) bool, whether each detection matched at each threshold.
        n_gt: GT instances of the class (> 0).

    Returns:
        (T,) float64 AP per threshold.
    """
    order = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(tp[:, order], axis=1, dtype=np.float64)
    fps = np.cumsum(~tp[:, order], axis=1, dtype=np.float64)
    out = np.zeros(tp.shape[0])
    if tp.shape[1] == 0:
        return out  # GT but no detection: AP 0
    for t in range(tp.shape[0]):
        recall = tps[t] / n_gt
        precision = tps[t] / np.maximum(tps[t] + fps[t], np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
        out[t] = q.mean()
    return out


class MaskEvaluator:
    """Accumulates frames, then computes mask AP and mean best IoU.

    ``add`` takes the predictions and GT of one frame; ``compute`` returns the metrics over all
    frames added so far. With ``class_agnostic`` every instance counts as one class.
    """

    def __init__(self, class_agnostic: bool = False, thresholds: np.ndarray = IOU_THRESHOLDS,
                 ) -> None:
        self.class_agnostic = class_agnostic
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self._scores: dict[int, list[np.ndarray]] = defaultdict(list)
        self._tp: dict[int, list[np.ndarray]] = defaultdict(list)
        self._n_gt: dict[int, int] = defaultdict(int)
        self._best_iou: list[np.ndarray] = []
        self.n_frames = 0
        self.n_detections = 0

    def add(self, pred_masks: np.ndarray, pred_scores: np.ndarray, pred_labels: np.ndarray,
            gt_masks: np.ndarray, gt_labels: np.ndarray) -> None:
        """One frame.

        Args:
            pred_masks: (N, H, W) bool predicted masks (binarised by the caller).
            pred_scores: (N,) float scores. pred_labels: (N,) int classes.
            gt_masks: (M, H, W) bool GT instance masks. gt_labels: (M,) int classes.
        """
        pred_masks = np.asarray(pred_masks, bool)
        gt_masks = np.asarray(gt_masks, bool)
        if pred_masks.shape[1:] != gt_masks.shape[1:] and len(pred_masks) and len(gt_masks):
            raise ValueError(f"predicted masks {pred_masks.shape[1:]} vs GT {gt_masks.shape[1:]}")
        pred_labels = np.zeros(len(pred_masks), np.int64) if self.class_agnostic \
            else np.asarray(pred_labels, np.int64)
        gt_labels = np.zeros(len(gt_masks), np.int64) if self.class_agnostic \
            else np.asarray(gt_labels, np.int64)
        pred_scores = np.asarray(pred_scores, np.float64)
        ious = mask_iou(pred_masks, gt_masks)
        self._best_iou.append(ious.max(axis=0) if len(pred_masks) else np.zeros(len(gt_masks)))
        self.n_frames += 1
        self.n_detections += len(pred_masks)
        for c in set(pred_labels.tolist()) | set(gt_labels.tolist()):
            d = np.flatnonzero(pred_labels == c)
            d = d[np.argsort(-pred_scores[d], kind="mergesort")][:MAX_DETECTIONS]
            g = np.flatnonzero(gt_labels == c)
            self._n_gt[c] += len(g)
            self._scores[c].append(pred_scores[d])
            self._tp[c].append(_match(ious[np.ix_(d, g)], self.thresholds))

    def compute(self) -> dict[str, float | int | dict | None]:
        """``ap`` (0.5:0.95), ``ap50``, ``per_class_ap50`` and ``per_class_ap`` (classes with GT),
        ``mean_best_iou``, and the counts. AP values are None when no GT instance was added."""
        per_class = {}
        for c, n_gt in sorted(self._n_gt.items()):
            if n_gt == 0:
                continue  # COCO leaves classes without GT out of the mean
            per_class[c] = average_precision(np.concatenate(self._scores[c]),
                                             np.concatenate(self._tp[c], axis=1), n_gt)
        best = np.concatenate(self._best_iou) if self._best_iou else np.zeros(0)
        if per_class:
            table = np.stack(list(per_class.values()))  # (C, T)
            ap, ap50 = float(table.mean()), float(table[:, 0].mean())
        else:
            ap = ap50 = None
        return {
            "ap": ap, "ap50": ap50,
            "per_class_ap50": {int(c): float(v[0]) for c, v in per_class.items()},
            "per_class_ap": {int(c): float(v.mean()) for c, v in per_class.items()},
            "mean_best_iou": float(best.mean()) if len(best) else None,
            "n_frames": self.n_frames, "n_gt": int(len(best)), "n_detections": self.n_detections,
        }
