"""Mask AP and mean best IoU (pipeline.masks.ap) on hand-made frames with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.masks.ap import IOU_THRESHOLDS, MaskEvaluator, average_precision, mask_iou

H, W = 23, 31  # odd sizes on purpose


def box_mask(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y0 + h, x0:x0 + w] = True
    return m


GT = np.stack([box_mask(1, 1, 10, 10), box_mask(12, 15, 8, 12)])  # 100 px, 96 px
GT_LABELS = np.array([1, 1])


def test_mask_iou_values():
    a = np.stack([box_mask(1, 1, 10, 10), box_mask(1, 1, 8, 8), np.zeros((H, W), bool)])
    iou = mask_iou(a, GT[:1])
    np.testing.assert_allclose(iou[:, 0], [1.0, 0.64, 0.0])
    assert mask_iou(a, np.zeros((0, H, W), bool)).shape == (3, 0)


def test_perfect_predictions_score_one():
    ev = MaskEvaluator()
    ev.add(GT, np.array([0.9, 0.8]), GT_LABELS, GT, GT_LABELS)
    ev.add(GT[:1], np.array([0.7]), np.array([4]), GT[:1], np.array([4]))
    m = ev.compute()
    assert m["ap"] == pytest.approx(1.0) and m["ap50"] == pytest.approx(1.0)
    assert m["per_class_ap50"] == {1: pytest.approx(1.0), 4: pytest.approx(1.0)}
    assert m["mean_best_iou"] == pytest.approx(1.0)
    assert (m["n_frames"], m["n_gt"], m["n_detections"]) == (2, 3, 3)


def test_no_detection_scores_zero():
    ev = MaskEvaluator()
    ev.add(np.zeros((0, H, W), bool), np.zeros(0), np.zeros(0, int), GT, GT_LABELS)
    m = ev.compute()
    assert m["ap"] == 0.0 and m["ap50"] == 0.0 and m["mean_best_iou"] == 0.0


def test_one_hit_one_false_positive_gives_51_of_101_recall_points():
    # Two GT; the top detection matches one exactly, the second is on the background. Recall
    # reaches 0.5 at precision 1: the recall points 0, 0.01, ..., 0.50 (51 of 101) score 1.
    preds = np.stack([GT[0], box_mask(12, 1, 5, 5)])
    ev = MaskEvaluator()
    ev.add(preds, np.array([0.9, 0.8]), np.array([1, 1]), GT, GT_LABELS)
    m = ev.compute()
    assert m["ap50"] == pytest.approx(51 / 101)
    assert m["ap"] == pytest.approx(51 / 101)  # the hit is exact: same at every threshold
    assert m["mean_best_iou"] == pytest.approx(0.5)  # IoUs 1 and 0


def test_false_positive_ranked_first_lowers_precision():
    # Same detections, scores swapped: at recall 0.5 precision is 1/2.
    preds = np.stack([GT[0], box_mask(12, 1, 5, 5)])
    ev = MaskEvaluator()
    ev.add(preds, np.array([0.8, 0.9]), np.array([1, 1]), GT, GT_LABELS)
    assert ev.compute()["ap50"] == pytest.approx(0.5 * 51 / 101)


def test_partial_overlap_counts_only_below_its_iou():
    # IoU 0.64: a hit at thresholds 0.50, 0.55, 0.60, a miss at 0.65..0.95 -> AP = 3/10.
    ev = MaskEvaluator()
    ev.add(box_mask(1, 1, 8, 8)[None], np.array([0.9]), np.array([1]), GT[:1], GT_LABELS[:1])
    m = ev.compute()
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap"] == pytest.approx(0.3)
    assert m["mean_best_iou"] == pytest.approx(0.64)


def test_wrong_class_is_a_miss_but_still_covers_the_instance():
    ev, agnostic = MaskEvaluator(), MaskEvaluator(class_agnostic=True)
    for e in (ev, agnostic):
        e.add(GT[:1], np.array([0.9]), np.array([2]), GT[:1], np.array([1]))
    m = ev.compute()
    # class 1 has GT and no detection (0); class 2 has no GT and is left out of the mean
    assert m["ap50"] == 0.0 and m["per_class_ap50"] == {1: 0.0}
    assert m["mean_best_iou"] == pytest.approx(1.0)
    assert agnostic.compute()["ap50"] == pytest.approx(1.0)


def test_each_gt_matches_once():
    # Two detections of the same instance: the second is a false positive.
    ev = MaskEvaluator()
    ev.add(np.stack([GT[0], GT[0]]), np.array([0.9, 0.8]), np.array([1, 1]), GT[:1],
           GT_LABELS[:1])
    assert ev.compute()["ap50"] == pytest.approx(1.0)  # recall 1 reached at precision 1
    ev = MaskEvaluator()
    ev.add(np.stack([GT[0], GT[0]]), np.array([0.8, 0.9]), np.array([1, 1]), GT, GT_LABELS)
    # recall 0.5 at precision 1 (first duplicate), the second adds nothing
    assert ev.compute()["ap50"] == pytest.approx(51 / 101)


def test_no_gt_at_all_gives_none():
    ev = MaskEvaluator()
    ev.add(GT[:1], np.array([0.5]), np.array([1]), np.zeros((0, H, W), bool), np.zeros(0, int))
    m = ev.compute()
    assert m["ap"] is None and m["ap50"] is None and m["mean_best_iou"] is None


def test_average_precision_interpolates_like_coco():
    # 4 GT; ranked hits/misses T F T F: precision envelope 1 up to recall .25, 2/3 to .5.
    tp = np.array([[True, False, True, False]])
    ap = average_precision(np.array([0.9, 0.8, 0.7, 0.6]), tp, n_gt=4)
    expected = (26 * 1.0 + 25 * (2 / 3)) / 101  # recall points 0..0.25 and 0.26..0.50
    assert ap[0] == pytest.approx(expected)


def test_thresholds_are_cocos():
    assert len(IOU_THRESHOLDS) == 10
    assert IOU_THRESHOLDS[0] == 0.5 and IOU_THRESHOLDS[-1] == pytest.approx(0.95)
