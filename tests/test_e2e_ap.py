"""Tests of pipeline.e2e.detection_ap (golden AP values) and zero-shot label masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.e2e.detection_ap import (
    DetectionAP, actor_pair_ap, average_precision, zero_shot_ratio,
)
from pipeline.e2e.labels import IGNORE_ACTION, mask_action_labels


def _pred(boxes, actor, action, scores, masks=None):
    """Detections certain of their action: action and joint scores equal the actor score."""
    action_probs = torch.nn.functional.one_hot(torch.tensor(action) - 1, 9).float()
    pred = {"boxes": torch.tensor(boxes, dtype=torch.float32), "actor": torch.tensor(actor),
            "actor_score": torch.tensor(scores), "action_probs": action_probs}
    if masks is not None:
        pred["masks"] = masks
    return pred


def _gt(boxes, actor, action, masks=None):
    gt = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
          "actor": torch.tensor(actor, dtype=torch.int64), "action": torch.tensor(action, dtype=torch.int64)}
    if masks is not None:
        gt["masks"] = masks
    return gt


@pytest.mark.parametrize("nms_iou, expected", [(None, 5 / 6), (0.5, 1.0)])
def test_hand_computed_ap_over_two_frames(nms_iou, expected):
    # 3 GT adult-walking (18), 4 detections:
    #   frame A: d1 0.9 on g1 (TP), d2 0.8 IoU 0.9 with g1 again (duplicate), d4 0.6 on g2 (TP)
    #   frame B: d3 0.7 on g3 (TP)
    # no NMS: the duplicate is an FP, ranked TP FP TP TP: precision 1, 1/2, 2/3, 3/4 at recall
    # 1/3, 1/3, 2/3, 1; all-point envelope: 1 up to recall 1/3, 3/4 up to recall 1
    # -> AP = 1/3 * 1 + 2/3 * 3/4 = 5/6.  NMS at 0.5 (IoU(d1, d2) = 0.9): d2 is suppressed,
    # ranked TP TP TP -> AP = 1.
    ap = DetectionAP(nms_iou=nms_iou)
    ap.update(_pred([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 29]], [1, 1, 1], [8, 8, 8], [0.9, 0.8, 0.6]),
              _gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [8, 8]))
    ap.update(_pred([[0, 0, 10, 10]], [1], [8], [0.7]), _gt([[0, 0, 10, 10]], [1], [8]))
    res = ap.compute()
    for setting, cls in (("actor", 1), ("action", 8), ("joint", 18)):
        assert res[setting]["ap"][cls] == pytest.approx(expected)
        assert res[setting]["map"] == pytest.approx(expected)  # the only class with GT
    assert math.isnan(res["actor"]["ap"][2]) and math.isnan(res["joint"]["ap"][19])


def _probs(**by_action):
    """(9,) action probabilities from keyword ``a<action id>=p``."""
    p = torch.zeros(9)
    for key, v in by_action.items():
        p[int(key[1:]) - 1] = v
    return p


def test_action_scores_use_the_actor_score_and_drop_duplicate_copies():
    # GT: two adult-walking (18), g1 [0,0,10,10] and g2 [20,0,30,10]. Detections as torchvision
    # emits them: d1/d2 the adult and baby copies of one RoI on g1, d3 a background box (actor
    # score 0.1) with a confident action, d4 the adult on g2; walking is every box's best action.
    gt = _gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1], [8, 8])
    boxes = [[0.0, 0, 10, 10], [0, 0, 10, 10], [40, 0, 50, 10], [20, 0, 30, 10]]
    probs = [_probs(a8=0.6, a7=0.3, a9=0.1), _probs(a8=0.9, a9=0.1), _probs(a8=0.95, a9=0.05),
             _probs(a8=0.36, a7=0.34, a9=0.3)]
    pred = {"boxes": torch.tensor(boxes), "actor": torch.tensor([1, 2, 1, 1]),
            "actor_score": torch.tensor([0.6, 0.35, 0.1, 0.8]), "action_probs": torch.stack(probs)}
    # Old scoring, p(walking | actor RoI) alone and every copy counted: d3 0.95 FP, d2 0.9 TP,
    # d1 0.6 FP (g1 taken), d4 0.36 TP -> precision 1/2 at recall 1/2 and 2/4 at recall 1: AP 1/2.
    old = average_precision(np.array([0.95, 0.9, 0.6, 0.36]),
                            np.array([False, True, False, True]), 2)
    assert old == pytest.approx(0.5)
    # p(actor) * p(walking): d1 0.36, d2 0.315, d4 0.288, d3 0.095. Without suppression the baby
    # copy is a duplicate FP ranked second: TP FP TP FP -> AP 1/2 * 1 + 1/2 * 2/3 = 5/6.
    ap = DetectionAP(nms_iou=None)
    ap.update(pred, gt)
    assert ap.compute()["action"]["ap"][8] == pytest.approx(5 / 6)
    # With class-wise NMS (IoU(d1, d2) = 1 > 0.5) the copy is gone: TP TP FP -> AP 1.
    ap = DetectionAP()
    ap.update(pred, gt)
    res = ap.compute()
    assert res["action"]["ap"][8] == pytest.approx(1.0)
    assert res["action"]["map"] == pytest.approx(1.0)
    # the copies are different actors and pairs: actor and joint settings keep both, no FP
    # above a TP (adult: d4 0.8, d1 0.6, the background d3 0.1 last)
    assert res["actor"]["ap"][1] == pytest.approx(1.0)
    assert res["joint"]["ap"][18] == pytest.approx(1.0)


def test_second_best_action_of_a_box_is_a_detection_too():
    # GT adult-running (17); the detector thinks walking (0.6) more likely than running (0.3).
    # Old scoring kept only the best valid action (adult-walking): AP(running) = AP(17) = 0.
    # Now the box is also adult-running at 0.9 * 0.3: the only detection of 17, a TP -> AP 1.
    ap = DetectionAP()
    ap.update({"boxes": torch.tensor([[0.0, 0, 10, 10]]), "actor": torch.tensor([1]),
               "actor_score": torch.tensor([0.9]),
               "action_probs": _probs(a8=0.6, a7=0.3, a9=0.1)[None]},
              _gt([[0, 0, 10, 10]], [1], [7]))
    res = ap.compute()
    assert res["action"]["ap"][7] == 1.0 and res["joint"]["ap"][17] == 1.0
    assert res["joint"]["map"] == 1.0  # adult-walking has no GT: its FP is not scored
    assert math.isnan(res["joint"]["ap"][18])


def test_average_precision_edge_cases():
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == 1.0
    assert average_precision(np.array([0.9]), np.array([False]), 1) == 0.0
    assert average_precision(np.array([0.9, 0.1]), np.array([True, False]), 2) == 0.5  # recall stops at 1/2
    # the ranking is by score, not by input order: FP first then TP -> precision 1/2 at recall 1
    assert average_precision(np.array([0.2, 0.9]), np.array([True, False]), 1) == 0.5
    assert math.isnan(average_precision(np.zeros(0), np.zeros(0, bool), 0))
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0


def test_wrong_class_and_unknown_action_gt():
    ap = DetectionAP()
    # GT: a dog (7) running (7) and a cat (6) with unknown action
    gt = _gt([[0, 0, 10, 10], [30, 0, 40, 10]], [7, 6], [7, IGNORE_ACTION])
    # d1: right box, dog-walking: actor TP, action FP, joint FP; d2: on the cat, cat-eating
    pred = _pred([[0, 0, 10, 10], [30, 0, 40, 10]], [7, 6], [8, 3], [0.9, 0.8])
    ap.update(pred, gt)
    res = ap.compute()
    assert res["actor"]["ap"][7] == 1.0 and res["actor"]["ap"][6] == 1.0
    assert res["action"]["ap"][7] == 0.0  # the running GT was missed
    assert math.isnan(res["action"]["ap"][8])  # walking: no GT, its FP does not matter
    # the cat detection hit an unknown-action GT: neither TP nor FP, and no GT for eating
    assert math.isnan(res["action"]["ap"][3]) and math.isnan(res["joint"]["ap"][63])
    assert res["joint"]["ap"][77] == 0.0
    assert res["action"]["map"] == 0.0 and res["joint"]["map"] == 0.0


def test_mask_iou_matching():
    m_gt = torch.zeros(1, 8, 8)
    m_gt[0, :4, :4] = 1
    good, bad = torch.zeros(8, 8), torch.zeros(8, 8)
    good[:4, :3] = 0.9  # IoU 12/16
    bad[:4, :1] = 0.9  # IoU 4/16
    boxes = [[0, 0, 4, 4], [0, 0, 4, 4]]  # identical boxes: only the masks tell them apart
    ap = DetectionAP(iou_type="mask", nms_iou=None)  # NMS (on boxes) would drop one of them
    ap.update(_pred(boxes, [1, 1], [9, 9], [0.5, 0.9], torch.stack([good, bad])),
              _gt([[0, 0, 4, 4]], [1], [9], m_gt))
    assert ap.compute()["actor"]["ap"][1] == pytest.approx(0.5)  # ranked FP, TP
    with pytest.raises(ValueError, match="iou_type"):
        DetectionAP(iou_type="segm")


def test_mask_action_labels_removes_exactly_one_actors_actions():
    targets = [
        {"boxes": torch.zeros(3, 4), "actor": torch.tensor([1, 2, 1]), "action": torch.tensor([8, 2, 9]),
         "masks": torch.zeros(3, 2, 2, dtype=torch.uint8)},
        {"boxes": torch.zeros(1, 4), "actor": torch.tensor([3]), "action": torch.tensor([6]),
         "masks": torch.zeros(1, 2, 2, dtype=torch.uint8)},
    ]
    out = mask_action_labels(targets, actor=1)
    assert out[0]["action"].tolist() == [IGNORE_ACTION, 2, IGNORE_ACTION]
    assert out[1]["action"].tolist() == [6]
    for before, after in zip(targets, out):
        assert after["actor"] is before["actor"] and after["masks"] is before["masks"]
    assert targets[0]["action"].tolist() == [8, 2, 9]  # input untouched
    with pytest.raises(ValueError):
        mask_action_labels(targets, actor=8)


def test_zero_shot_actor_ap_and_ratio():
    joint = dict.fromkeys([11, 12, 13, 15, 16, 17, 18, 19, 21, 22], math.nan)
    joint.update({11: 0.2, 18: 0.6, 19: 0.4, 21: 0.9})
    assert actor_pair_ap(joint, 1) == pytest.approx(0.4)  # (0.2 + 0.6 + 0.4) / 3, NaN skipped
    assert math.isnan(actor_pair_ap({p: math.nan for p in joint}, 1))
    assert zero_shot_ratio(0.3, 0.6) == pytest.approx(0.5)
    assert math.isnan(zero_shot_ratio(0.3, 0.0))
