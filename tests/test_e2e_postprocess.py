"""Tests of pipeline.e2e.postprocess: valid-action choice, box masks, label-map painting rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.e2e.postprocess import (
    boxes_to_masks, detection_scores, instances_to_label_map, select_actions, to_instances,
)


def test_select_actions_picks_the_best_valid_action():
    actor = torch.tensor([5, 1, 3])
    probs = torch.zeros(3, 9)
    probs[0, [0, 3, 4]] = torch.tensor([0.7, 0.1, 0.2])  # car-climbing (51) invalid; 55 > 54
    probs[1, [3, 8]] = torch.tensor([0.6, 0.3])  # adult-flying (14) invalid -> adult-none (19)
    probs[2, 5] = 0.9  # ball-rolling (36) valid
    action, score = select_actions(actor, probs)
    assert action.tolist() == [5, 9, 6]
    torch.testing.assert_close(score, torch.tensor([0.2, 0.3, 0.9]))
    action, score = select_actions(actor, probs, valid_only=False)
    assert action.tolist() == [1, 4, 6]
    assert select_actions(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 9))[0].shape == (0,)


def test_boxes_to_masks_fills_pixel_centres_inside():
    masks = boxes_to_masks(torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.4, 0.6, 1.4, 1.6]]), (3, 4))
    expected0 = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    expected1 = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(masks, torch.stack([expected0, expected1]))


def _instances(actor, action, actor_score, masks):
    n = len(actor)
    return {"boxes": torch.zeros(n, 4), "actor": torch.tensor(actor), "action": torch.tensor(action),
            "actor_score": torch.tensor(actor_score), "action_score": torch.ones(n),
            "score": torch.tensor(actor_score), "masks": torch.stack(masks)}


def test_label_map_overlap_threshold_and_score_rules():
    h, w = 3, 5
    a = torch.zeros(h, w)
    a[:, :3] = 0.9  # adult-walking, score 0.8, columns 0-2
    b = torch.zeros(h, w)
    b[:, 2:] = 0.6  # dog-running, score 0.9, columns 2-4, wins the overlap at column 2
    b[2, 4] = 0.49  # below the mask threshold: stays background
    c = torch.ones(h, w)  # cat-eating, score 0.3: dropped by the score threshold
    inst = _instances([1, 7, 6], [8, 7, 3], [0.8, 0.9, 0.3], [a, b, c])
    label = instances_to_label_map(inst, (h, w), score_thresh=0.5, mask_thresh=0.5)
    expected = np.array([[18, 18, 77, 77, 77],
                         [18, 18, 77, 77, 77],
                         [18, 18, 77, 77, 0]], dtype=np.uint8)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, expected)
    # swap the scores: now the adult wins column 2; a lower threshold lets the cat in underneath
    inst["actor_score"] = torch.tensor([0.9, 0.8, 0.3])
    label = instances_to_label_map(inst, (h, w), score_thresh=0.2)
    expected = np.array([[18, 18, 18, 77, 77],
                         [18, 18, 18, 77, 77],
                         [18, 18, 18, 77, 63]], dtype=np.uint8)
    np.testing.assert_array_equal(label, expected)
    with pytest.raises(ValueError, match="masks"):
        instances_to_label_map(inst, (h, w + 1))


def test_to_instances_joint_scores_valid_pairs_and_box_masks():
    output = {
        "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0]]),
        "actor": torch.tensor([2, 4]), "actor_score": torch.tensor([0.9, 0.5]),
        "action_probs": torch.tensor([[0.1, 0.4, 0, 0.5, 0, 0, 0, 0, 0],  # baby-flying (24) invalid
                                      [0, 0, 0, 0.8, 0, 0, 0, 0, 0.2]]),  # bird-flying (44)
    }
    inst = to_instances(output, (3, 4))  # no mask head: masks from boxes
    assert inst["action"].tolist() == [2, 4]
    torch.testing.assert_close(inst["score"], torch.tensor([0.9 * 0.4, 0.5 * 0.8]))
    assert inst["masks"].shape == (2, 3, 4) and float(inst["masks"][1].sum()) == 6.0
    label = instances_to_label_map(inst, (3, 4), score_thresh=0.0)
    np.testing.assert_array_equal(label, np.array([[22, 22, 0, 0], [22, 22, 44, 44], [0, 44, 44, 44]]))


def _copies():
    """torchvision-style output: one RoI copied for actors adult (1) and baby (2), one bird (4)."""
    return {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 0, 30, 10]]),
        "actor": torch.tensor([1, 2, 4]), "actor_score": torch.tensor([0.8, 0.2, 0.5]),
        # columns: actions 1..9; baby-flying (24) and adult-flying (14) are invalid pairs
        "action_probs": torch.tensor([[0, 0, 0, 0.5, 0, 0, 0, 0.4, 0.1],
                                      [0, 0, 0, 0.5, 0, 0, 0, 0.5, 0],
                                      [0, 0, 0, 0.7, 0, 0, 0, 0, 0.3]]),
    }


def test_detection_scores_actor_setting_suppresses_same_class_duplicates():
    pred = _copies()
    det, cls, score = detection_scores(pred, "actor")
    # different actors overlapping are different classes: both stay
    assert det.tolist() == [0, 2, 1] and cls.tolist() == [1, 4, 2]
    torch.testing.assert_close(score, torch.tensor([0.8, 0.5, 0.2]))
    pred["actor"] = torch.tensor([1, 1, 4])  # now a same-class duplicate (IoU 0.9 > 0.5)
    det, cls, _ = detection_scores(pred, "actor")
    assert det.tolist() == [0, 2] and cls.tolist() == [1, 4]
    assert detection_scores(pred, "actor", nms_iou=None)[0].tolist() == [0, 2, 1]


def test_detection_scores_action_combines_actor_score_and_drops_copies():
    det, cls, score = detection_scores(_copies(), "action")
    # adult copy: walking 0.8*0.4, none 0.8*0.1 (flying invalid for adults);
    # baby copy: walking 0.2*0.5 = 0.1, a duplicate of the adult's walking (IoU 0.9): suppressed;
    # bird: flying 0.5*0.7, none 0.5*0.3
    assert list(zip(det.tolist(), cls.tolist())) == [(2, 4), (0, 8), (2, 9), (0, 9)]
    torch.testing.assert_close(score, torch.tensor([0.35, 0.32, 0.15, 0.08]))
    det, cls, score = detection_scores(_copies(), "action", nms_iou=None)
    assert (1, 8) in list(zip(det.tolist(), cls.tolist())) and len(det) == 5


def test_detection_scores_joint_classes_and_empty_input():
    det, cls, score = detection_scores(_copies(), "joint")
    # the copies are different joint classes (18 vs 28): no suppression between them
    assert list(zip(det.tolist(), cls.tolist())) == [(2, 44), (0, 18), (2, 49), (1, 28), (0, 19)]
    torch.testing.assert_close(score, torch.tensor([0.35, 0.32, 0.15, 0.1, 0.08]))
    empty = {"boxes": torch.zeros(0, 4), "actor": torch.zeros(0, dtype=torch.int64),
             "actor_score": torch.zeros(0), "action_probs": torch.zeros(0, 9)}
    for setting in ("actor", "action", "joint"):
        assert all(len(t) == 0 for t in detection_scores(empty, setting))
    with pytest.raises(ValueError, match="setting"):
        detection_scores(empty, "pair")
