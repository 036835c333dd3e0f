"""Golden values of the A2D segmentation metrics (protocol: shared/docs/a2d-format.md section 6)."""

import numpy as np
import pytest
from scipy import ndimage

from pipeline.a2d.classes import JOINT_IDS
from pipeline.metrics import (
    N_IDS,
    VIDEO_AVERAGED_LABEL,
    ConfusionMatrix,
    VideoAveragedIoU,
    frame_iou,
    label_changes,
    non_boundary_mask,
)


def every_class_gt() -> np.ndarray:
    """(44, 45) GT: joint class i fills the first i + 1 pixels of row i, background the rest.

    Every class is present, with unequal sizes so that ave and glo differ."""
    gt = np.zeros((len(JOINT_IDS), len(JOINT_IDS) + 1), np.uint8)
    for i, cid in enumerate(JOINT_IDS):
        gt[i, : i + 1] = cid
    return gt


def summary(gt, pred, keep=None):
    cm = ConfusionMatrix()
    cm.update(gt, pred, keep)
    return cm.summary()


def test_perfect_prediction_is_100_everywhere():
    gt = every_class_gt()
    for setting in summary(gt, gt.copy()).values():
        assert (setting["ave"], setting["glo"], setting["miou"]) == (100.0, 100.0, 100.0)


def test_all_background_gives_the_protocol_sanity_values():
    gt = every_class_gt()
    s = summary(gt, np.zeros_like(gt))
    assert s["actor"]["ave"] == pytest.approx(100 / 8)
    assert s["action"]["ave"] == pytest.approx(100 / 10)
    assert s["joint"]["ave"] == pytest.approx(100 / 44)
    assert s["joint"]["n_classes_with_gt"] == 44
    n_bg, n = int((gt == 0).sum()), gt.size
    for setting in s.values():
        assert setting["glo"] == pytest.approx(100 * n_bg / n)
    # background IoU = n_bg / n (every pixel predicted background), every other class 0
    assert s["joint"]["miou"] == pytest.approx(100 * n_bg / n / 44)
    assert s["actor"]["miou"] == pytest.approx(100 * n_bg / n / 8)


def test_invalid_pair_is_wrong_in_joint_but_its_digits_score():
    gt = np.full((3, 5), 11, np.uint8)  # adult-climbing
    s = summary(gt, np.full_like(gt, 14))  # adult-flying: not a valid pair
    assert s["actor"]["glo"] == 100.0 and s["actor"]["miou"] == 100.0
    assert s["action"]["glo"] == 0.0
    assert s["joint"]["glo"] == 0.0 and s["joint"]["ave"] == 0.0


def test_invalid_pair_is_nobodys_false_positive_in_joint():
    gt = np.zeros((4, 4), np.uint8)
    gt[:, 2:] = 11
    pred = gt.copy()
    pred[gt == 11] = 14
    s = summary(gt, pred)
    # background: TP 8, no FP (the invalid pair predicts no joint class) -> IoU 100; 11: IoU 0
    assert s["joint"]["miou"] == pytest.approx(50.0)
    assert s["joint"]["glo"] == pytest.approx(50.0)


def test_hand_computed_3x3():
    gt = np.array([[0, 0, 11],
                   [0, 11, 11],
                   [21, 21, 11]], np.uint8)
    pred = np.array([[0, 11, 11],
                     [0, 11, 21],
                     [21, 0, 14]], np.uint8)
    # joint (GT: bg 3 px, 11 4 px, 21 2 px):
    #   bg: TP 2 (0,0),(1,0); FN 1 (0,1)->11; FP 1 (2,1)        acc 2/3, IoU 2/4
    #   11: TP 2 (0,2),(1,1); FN 2 (1,2)->21, (2,2)->14; FP 1   acc 2/4, IoU 2/5
    #   21: TP 1 (2,0);       FN 1 (2,1)->0;  FP 1 (1,2)        acc 1/2, IoU 1/3
    #   glo 5/9; ave (2/3 + 1/2 + 1/2)/3; mIoU (1/2 + 2/5 + 1/3)/3 (41 classes without GT left out)
    # actor (bg 3, adult 4, baby 2): 14 on 11 is now a correct adult
    #   bg: TP 2 FN 1 FP 1; adult: TP 3, FN 1 (->baby), FP 1 ((0,1)); baby: TP 1, FN 1, FP 1
    #   glo 6/9; ave (2/3 + 3/4 + 1/2)/3; mIoU (2/4 + 3/5 + 1/3)/3
    # action (bg 3, climbing 6: 11 and 21 share action 1):
    #   bg: TP 2, FN 1, FP 1; climbing: TP 4, FN 2 ((2,2)->flying, (2,1)->bg), FP 1 ((0,1))
    #   flying has FP only and no GT: left out.  glo 6/9; ave (2/3 + 4/6)/2; mIoU (2/4 + 4/7)/2
    s = summary(gt, pred)
    expected = {
        "joint": (100 * (2 / 3 + 1 / 2 + 1 / 2) / 3, 100 * 5 / 9,
                  100 * (1 / 2 + 2 / 5 + 1 / 3) / 3),
        "actor": (100 * (2 / 3 + 3 / 4 + 1 / 2) / 3, 100 * 6 / 9,
                  100 * (2 / 4 + 3 / 5 + 1 / 3) / 3),
        "action": (100 * (2 / 3 + 4 / 6) / 2, 100 * 6 / 9, 100 * (2 / 4 + 4 / 7) / 2),
    }
    for name, (ave, glo, miou) in expected.items():
        assert s[name]["ave"] == pytest.approx(ave), name
        assert s[name]["glo"] == pytest.approx(glo), name
        assert s[name]["miou"] == pytest.approx(miou), name
    assert (s["joint"]["ave"], s["joint"]["glo"], s["joint"]["miou"]) == pytest.approx(
        (55.5556, 55.5556, 41.1111), abs=1e-4)
    assert s["action"]["n_classes_with_gt"] == 2


def test_per_class_accuracy_of_the_3x3_case():
    cm = ConfusionMatrix()
    cm.update(np.array([[0, 0, 11], [0, 11, 11], [21, 21, 11]], np.uint8),
              np.array([[0, 11, 11], [0, 11, 21], [21, 0, 14]], np.uint8))
    rows = {(r["setting"], r["class_id"]): r for r in cm.per_class()}
    assert len(rows) == 8 + 10 + 44
    assert rows[("joint", 0)]["accuracy"] == pytest.approx(200 / 3)
    assert rows[("joint", 11)]["accuracy"] == pytest.approx(50.0)
    assert rows[("joint", 11)]["iou"] == pytest.approx(40.0)
    assert rows[("joint", 11)]["name"] == "adult-climbing"
    assert rows[("joint", 21)]["gt_pixels"] == 2
    assert rows[("joint", 79)]["accuracy"] is None and rows[("joint", 79)]["gt_pixels"] == 0
    assert rows[("actor", 1)]["accuracy"] == pytest.approx(75.0)
    assert rows[("action", 1)]["accuracy"] == pytest.approx(400 / 6)


def test_accumulation_pools_pixels_not_frame_averages():
    big_gt = np.full((10, 10), 11, np.uint8)  # 100 px, all right
    small_gt = np.full((2, 2), 21, np.uint8)  # 4 px, all wrong
    cm = ConfusionMatrix()
    cm.update(big_gt, big_gt)
    cm.update(small_gt, np.zeros_like(small_gt))
    s = cm.summary()["joint"]
    assert cm.n_frames == 2
    assert s["glo"] == pytest.approx(100 * 100 / 104)  # a per-frame mean would give 50
    assert s["ave"] == pytest.approx(50.0)  # 11: 100 %, 21: 0 %
    assert s["miou"] == pytest.approx(50.0)  # bg has a FP but no GT: left out
    # identical to one confusion matrix over both frames side by side
    one = ConfusionMatrix()
    gt = np.zeros((10, 12), np.uint8)
    pred = np.zeros((10, 12), np.uint8)
    gt[:, :10], pred[:, :10] = 11, 11
    gt[:2, 10:] = 21
    keep = np.ones(gt.shape, bool)
    keep[2:, 10:] = False
    one.update(gt, pred, keep)
    np.testing.assert_array_equal(one.counts, cm.counts)
    merged = ConfusionMatrix()
    merged.update(big_gt, big_gt)
    other = ConfusionMatrix()
    other.update(small_gt, np.zeros_like(small_gt))
    np.testing.assert_array_equal(merged.merge(other).counts, cm.counts)


def test_miou_only_over_classes_with_gt_pixels():
    gt = np.zeros((5, 8), np.uint8)
    pred = gt.copy()
    pred[0, :4] = 11  # 4 false positives of a class absent from the GT
    s = summary(gt, pred)["joint"]
    assert s["n_classes_with_gt"] == 1
    assert s["miou"] == pytest.approx(100 * 36 / 40)  # not halved by class 11's IoU of 0
    assert s["ave"] == pytest.approx(100 * 36 / 40)


@pytest.mark.parametrize("gt, pred, message", [
    (np.zeros((3, 4), np.uint8), np.zeros((4, 3), np.uint8), "shape"),
    (np.zeros((3, 4), np.uint8), np.full((3, 4), 10, np.uint8), "palette"),
    (np.zeros((3, 4), np.uint8), np.full((3, 4), 80, np.uint8), "palette"),
    (np.full((3, 4), 14, np.uint8), np.zeros((3, 4), np.uint8), "GT"),
])
def test_bad_input_is_rejected(gt, pred, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix().update(gt, pred)


def test_non_boundary_band_on_two_regions():
    gt = np.zeros((10, 40), np.uint8)
    gt[:, 20:] = 11  # one vertical label change between columns 19 and 20
    keep = non_boundary_mask(gt, 15)
    # change line on column 19; band = columns 12..26, 15 px wide (8 left, 7 right)
    assert keep.sum() == 10 * 25
    assert keep[:, :12].all() and keep[:, 27:].all() and not keep[:, 12:27].any()
    assert non_boundary_mask(gt, 1).sum() == 10 * 39  # only the line itself
    np.testing.assert_array_equal(non_boundary_mask(gt.T, 15), keep.T)  # same across rows


def test_non_boundary_band_is_clipped_by_the_border_and_empty_without_changes():
    gt = np.zeros((6, 40), np.uint8)
    gt[:, 4:] = 21  # line on column 3: band columns 0..10
    assert non_boundary_mask(gt, 15).sum() == 6 * 29
    assert non_boundary_mask(np.full((6, 9), 11, np.uint8)).all()
    with pytest.raises(ValueError, match="odd"):
        non_boundary_mask(gt, 14)


def test_non_boundary_band_is_exact_euclidean_distance():
    rng = np.random.default_rng(0)
    gt = np.zeros((45, 61), np.uint8)
    for _ in range(5):
        y, x = rng.integers(0, 45), rng.integers(0, 61)
        gt[y:y + rng.integers(3, 25), x:x + rng.integers(3, 30)] = rng.choice([11, 21, 34])
    dist = ndimage.distance_transform_edt(~label_changes(gt))
    np.testing.assert_array_equal(non_boundary_mask(gt, 15), dist > 7)


def test_non_boundary_metrics_only_count_kept_pixels():
    gt = np.zeros((10, 40), np.uint8)
    gt[:, 20:] = 11
    pred = gt.copy()
    pred[:, 14:26] = 34  # errors only inside the band
    keep = non_boundary_mask(gt)
    assert summary(gt, pred)["joint"]["glo"] < 100
    s = summary(gt, pred, keep)
    assert s["joint"]["glo"] == 100.0 and s["joint"]["miou"] == 100.0


def raw_counts(gt, pred):
    flat = np.asarray(gt, np.int64) * N_IDS + np.asarray(pred)
    return np.bincount(flat.ravel(), minlength=N_IDS * N_IDS).reshape(N_IDS, N_IDS)


@pytest.mark.parametrize("gt,pred,expected", [
    # 11 = adult-climbing, 21 = baby-climbing: joint {11: 1/2, 21: 1/2}; actor {1: 1/2, 2: 1/2};
    # action {climbing: 3/3}
    ([[11, 11, 21]], [[11, 21, 21]], {"joint": 0.5, "actor": 0.5, "action": 1.0}),
    # a class only predicted is in C_f with IoU 0; background is never in C_f
    ([[0, 11, 11, 11]], [[11, 11, 0, 0]], {"joint": 0.25, "actor": 0.25, "action": 0.25}),
    # 33 (ball-eating) is an invalid pair: a class of C_f in joint; 34 = ball-flying
    ([[0, 0, 34]], [[0, 33, 34]], {"joint": 0.5, "actor": 0.5, "action": 0.5}),
    # nothing but background: C_f empty, the frame is skipped
    ([[0, 0]], [[0, 0]], {"joint": np.nan, "actor": np.nan, "action": np.nan}),
])
def test_frame_iou_golden(gt, pred, expected):
    counts = raw_counts(gt, pred)
    for setting, value in expected.items():
        assert frame_iou(counts, setting) == pytest.approx(value, nan_ok=True), setting


def test_video_averaged_golden():
    va = VideoAveragedIoU()
    # v1: IoU_f (joint, actor, action) = (.5, .5, 1), skipped, (0, 0, 0)
    va.update("v1", np.array([[11, 11, 21]]), np.array([[11, 21, 21]]))
    va.update("v1", np.zeros((1, 3), np.uint8), np.zeros((1, 3), np.uint8))
    va.update("v1", np.zeros((1, 3), np.uint8), np.array([[0, 0, 33]]))
    # v2: one perfect frame; v3: only background, no score at all (left out of the mean)
    va.update("v2", np.full((1, 3), 11), np.full((1, 3), 11))
    va.update("v3", np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    out = va.compute()
    # videos: v1 = mean(.5, 0) = .25 (action mean(1, 0) = .5), v2 = 1; then mean over videos
    assert out["joint"] == pytest.approx(62.5) and out["actor"] == pytest.approx(62.5)
    assert out["action"] == pytest.approx(75.0)
    assert out["n_videos"] == {"actor": 2, "action": 2, "joint": 2}
    assert out["n_frames_scored"] == {"actor": 3, "action": 3, "joint": 3}
    assert out["n_frames_skipped"] == {"actor": 2, "action": 2, "joint": 2}
    assert out["label"] == VIDEO_AVERAGED_LABEL and "not the A2D protocol" in out["label"]


def test_video_averaged_and_a2d_miou_disagree():
    """Video-averaged 50.0 against the A2D protocol's 26.2 (joint) on the same predictions.

    The A2D protocol pools pixels over the test set: video 1's 100-pixel frame, whose 50 pixels
    of adult-climbing are all missed, dominates, and background (included in the protocol) gets
    its 50 false-negative pixels as false positives. The video-averaged number gives video 2's
    2-pixel frame (perfect) the same weight as video 1's, and leaves background out, so it is
    higher here; it would be lower where small, frequent frames are the wrong ones.
    """
    gt1 = np.zeros((10, 10), np.uint8)
    gt1[:5] = 11
    frames = [("v1", gt1, np.zeros_like(gt1)),
              ("v2", np.array([[0, 11]], np.uint8), np.array([[0, 11]], np.uint8))]
    cm, va = ConfusionMatrix(), VideoAveragedIoU()
    for video, gt, pred in frames:
        cm.update(gt, pred)
        va.update(video, gt, pred)
    a2d = cm.summary()["joint"]["miou"]
    # background: TP 51, GT 51, predicted 101; adult-climbing: TP 1, GT 51, predicted 1
    assert a2d == pytest.approx(100 * (51 / 101 + 1 / 51) / 2)
    assert va.compute()["joint"] == pytest.approx(50.0)  # (0 + 1) / 2 videos
    assert va.compute()["joint"] > a2d + 20
