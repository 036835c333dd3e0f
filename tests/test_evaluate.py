"""The evaluator CLI: frames of the test split, PNG and HDF5 predictions, errors naming files."""

import json

import cv2
import numpy as np
import pytest

from pipeline.a2d.annotations import FrameAnnotation, read_annotation, write_col_png, write_mat
from pipeline.a2d.classes import JOINT_IDS, PALETTE, is_palette_id
from pipeline.a2d.release import Release
from pipeline.a2d.videoset import VideoRecord, write_videoset
from pipeline.evaluate import eval_frames, main
from pipeline.h5cache import create_cache
from pipeline.metrics import VIDEO_AVERAGED_LABEL, ConfusionMatrix, frame_iou, non_boundary_mask

# (video id, test flag, (H, W), annotated frame ids); ids may start with '-'
VIDEOS = [("-vidA", True, (13, 17), [3, 7]), ("vidB", True, (16, 21), [2]),
          ("vidC", False, (13, 17), [1])]


def _annotation(label: np.ndarray) -> FrameAnnotation:
    ids = [int(c) for c in np.unique(label) if c]
    masks = np.stack([label == c for c in ids]) if ids else np.zeros((0, *label.shape), bool)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return FrameAnnotation(label, masks, np.array(boxes, np.float32).reshape(-1, 4),
                           np.array(ids, np.int64))


@pytest.fixture
def release(tmp_path):
    """A hand-made release (no clips: the evaluator reads only videoset.csv and Annotations)."""
    root = tmp_path / "Release"
    rng = np.random.default_rng(7)
    recs = []
    for vid, test, (h, w), frames in VIDEOS:
        for fr in frames:
            label = np.zeros((h, w), np.uint8)
            for _ in range(3):
                y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
                cls = rng.choice(JOINT_IDS[1:])
                label[y:y + rng.integers(2, 8), x:x + rng.integers(2, 9)] = cls
            write_mat(root / "Annotations/mat" / vid / f"{fr:05d}.mat", _annotation(label))
            write_col_png(root / "Annotations/col" / vid / f"{fr:05d}.png", label)
        recs.append(VideoRecord(vid, 11, "00:00:00", "00:00:01", h, w, 20, len(frames), test))
    write_videoset(root / "videoset.csv", recs)
    return root


def noisy_predictions(release_root, seed=0):
    """{(vid, frame): (H, W) uint8} test-frame predictions: GT with 30 % of pixels replaced by
    random palette ids (invalid pairs included)."""
    rng = np.random.default_rng(seed)
    palette = np.array(sorted(PALETTE), np.uint8)
    rel = Release.at(release_root)
    preds = {}
    for vid, frames in eval_frames(rel, None, "test").items():
        for fr in frames:
            gt = read_annotation(rel.mat(vid, fr)).label
            noise = rng.random(gt.shape) < 0.3
            pred = gt.copy()
            pred[noise] = rng.choice(palette, int(noise.sum()))
            preds[(vid, fr)] = pred
    return preds


def write_png_preds(folder, preds):
    for (vid, fr), pred in preds.items():
        write_col_png(folder / vid / f"{fr:05d}.png", pred)
    return folder


def write_h5_preds(folder, preds):
    for vid in sorted({v for v, _ in preds}):
        frames = sorted(fr for v, fr in preds if v == vid)
        with create_cache(folder / f"{vid}.h5", stage="predict", module="pipeline.evaluate",
                          config={"model": "test"}, format_version=1, source="unit-test") as f:
            f.create_dataset("labels", data=np.stack([preds[(vid, fr)] for fr in frames]),
                             chunks=(1, *preds[(vid, frames[0])].shape))
            f.create_dataset("frame_ids", data=np.array(frames, np.int32))
    return folder


def run(tmp_path, *args):
    out = tmp_path / "eval.json"
    rc = main([*map(str, args), "--out", str(out)])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def metrics(result):
    return {s: result[s] for s in ("actor", "action", "joint")}


def test_frames_are_the_annotated_frames_of_test_videos(release):
    frames = eval_frames(Release.at(release), None, "test")
    assert frames == {"-vidA": [3, 7], "vidB": [2]}
    assert eval_frames(Release.at(release), None, "train") == {"vidC": [1]}


def test_gt_colour_pngs_as_predictions_score_100(release, tmp_path):
    rc, result = run(tmp_path, "--release", release, "--pred-png", release / "Annotations/col")
    assert rc == 0
    for setting in metrics(result).values():
        assert (setting["ave"], setting["glo"], setting["miou"]) == (100.0, 100.0, 100.0)
    meta = result["meta"]
    assert (meta["n_frames"], meta["n_videos"], meta["split"]) == (3, 2, "test")
    assert meta["pixels"] == "all" and meta["synthetic"] is None  # hand-made: no README


def test_png_and_h5_predictions_give_identical_numbers(release, tmp_path):
    preds = noisy_predictions(release)
    assert any((~np.isin(p, JOINT_IDS) & is_palette_id(p)).any() for p in preds.values())
    png = write_png_preds(tmp_path / "png", preds)
    h5 = write_h5_preds(tmp_path / "h5", preds)
    rc1, from_png = run(tmp_path, "--release", release, "--pred-png", png)
    rc2, from_h5 = run(tmp_path, "--release", release, "--pred-h5", h5)
    assert rc1 == rc2 == 0
    assert metrics(from_png) == metrics(from_h5)
    assert from_png["per_class_accuracy"] == from_h5["per_class_accuracy"]
    assert from_h5["meta"]["predictions_provenance"][0]["source"] == "unit-test"
    # and both equal one confusion matrix over the same frames
    rel = Release.at(release)
    cm = ConfusionMatrix()
    for (vid, fr), pred in preds.items():
        cm.update(read_annotation(rel.mat(vid, fr)).label, pred)
    assert metrics(from_png) == {k: {m: pytest.approx(v) for m, v in s.items()}
                                 for k, s in cm.summary().items()}
    assert 0 < from_png["joint"]["miou"] < 100


def test_video_averaged_block_beside_the_protocol(release, tmp_path):
    preds = noisy_predictions(release, seed=2)
    rc, result = run(tmp_path, "--release", release, "--pred-h5",
                     write_h5_preds(tmp_path / "h5", preds))
    assert rc == 0
    block = result["video_averaged"]
    assert block["label"] == VIDEO_AVERAGED_LABEL
    # by hand: per frame IoU_f, mean per video (-vidA: frames 3 and 7; vidB: frame 2), then
    # mean over the two videos
    rel = Release.at(release)
    for setting in ("actor", "action", "joint"):
        per_video = {}
        for (vid, fr), pred in preds.items():
            gt = read_annotation(rel.mat(vid, fr)).label.astype(np.int64)
            counts = np.bincount((gt * 80 + pred).ravel(), minlength=6400).reshape(80, 80)
            per_video.setdefault(vid, []).append(frame_iou(counts, setting))
        expected = 100 * np.mean([np.mean(v) for v in per_video.values()])
        assert block[setting] == pytest.approx(expected), setting
        assert block["n_videos"][setting] == 2 and block["n_frames_scored"][setting] == 3
        # the protocol's numbers are untouched, and not the same quantity
        assert block[setting] != pytest.approx(result[setting]["miou"])
    rc, perfect = run(tmp_path, "--release", release, "--pred-png", release / "Annotations/col")
    assert [perfect["video_averaged"][s] for s in ("actor", "action", "joint")] == [100.0] * 3


def test_non_boundary_and_per_class_outputs(release, tmp_path):
    preds = noisy_predictions(release, seed=1)
    png = write_png_preds(tmp_path / "png", preds)
    nb, pc = tmp_path / "nb.json", tmp_path / "pc.csv"
    rc, result = run(tmp_path, "--release", release, "--pred-png", png, "--non-boundary-out", nb,
                     "--per-class-out", pc, "--boundary-width", 5)
    assert rc == 0
    nb_result = json.loads(nb.read_text())
    assert nb_result["meta"]["pixels"] == "non-boundary"
    assert nb_result["meta"]["boundary_width"] == 5
    rel = Release.at(release)
    cm = ConfusionMatrix()
    for (vid, fr), pred in preds.items():
        gt = read_annotation(rel.mat(vid, fr)).label
        cm.update(gt, pred, non_boundary_mask(gt, 5))
    assert nb_result["joint"]["glo"] == pytest.approx(cm.summary()["joint"]["glo"])
    lines = pc.read_text().splitlines()
    assert lines[0] == "setting,class_id,name,gt_pixels,accuracy,iou"
    assert len(lines) == 1 + 8 + 10 + 44
    assert result["per_class_accuracy"]["joint"]["0"] == pytest.approx(
        float(next(line for line in lines if line.startswith("joint,0,")).split(",")[4]), abs=1e-3)


def test_wrong_size_png_names_the_file(release, tmp_path, caplog):
    png = write_png_preds(tmp_path / "png", noisy_predictions(release))
    bad = png / "vidB" / "00002.png"
    write_col_png(bad, np.zeros((16, 20), np.uint8))
    rc, _ = run(tmp_path, "--release", release, "--pred-png", png)
    assert rc == 1
    assert str(bad) in caplog.text and "size" in caplog.text


def test_off_palette_colour_names_the_file(release, tmp_path, caplog):
    png = write_png_preds(tmp_path / "png", noisy_predictions(release))
    bad = png / "-vidA" / "00007.png"
    img = np.zeros((13, 17, 3), np.uint8)
    img[4, 5] = (10, 20, 30)  # not an A2D colour
    cv2.imwrite(str(bad), img)
    rc, _ = run(tmp_path, "--release", release, "--pred-png", png)
    assert rc == 1
    assert str(bad) in caplog.text and "palette" in caplog.text


def test_missing_png_is_an_error_unless_scored_as_background(release, tmp_path, caplog):
    preds = noisy_predictions(release)
    png = write_png_preds(tmp_path / "png", preds)
    gone = png / "-vidA" / "00003.png"
    gone.unlink()
    rc, _ = run(tmp_path, "--release", release, "--pred-png", png)
    assert rc == 1 and str(gone) in caplog.text
    rc, result = run(tmp_path, "--release", release, "--pred-png", png, "--missing-as-background")
    assert rc == 0 and result["meta"]["n_missing_as_background"] == 1
    preds[("-vidA", 3)] = np.zeros_like(preds[("-vidA", 3)])
    rc, expected = run(tmp_path, "--release", release,
                       "--pred-png", write_png_preds(tmp_path / "png0", preds))
    assert metrics(result) == metrics(expected)


def test_all_background_reference_equals_zero_predictions(release, tmp_path):
    """--all-background scores label 0 everywhere: the same numbers as all-zero PNGs, and
    below a model that is right on some actor pixels."""
    rc, ref = run(tmp_path, "--release", release, "--all-background")
    assert rc == 0 and ref["meta"]["predictions"] == "all-background"
    zeros = {k: np.zeros_like(v) for k, v in noisy_predictions(release).items()}
    rc, expected = run(tmp_path, "--release", release,
                       "--pred-png", write_png_preds(tmp_path / "zeros", zeros))
    assert metrics(ref) == metrics(expected)
    assert ref["video_averaged"]["joint"] == 0.0  # every GT label present, none predicted
    rc, noisy = run(tmp_path, "--release", release,
                    "--pred-png", write_png_preds(tmp_path / "noisy", noisy_predictions(release)))
    assert noisy["joint"]["miou"] > ref["joint"]["miou"]


@pytest.mark.parametrize("problem", ["size", "off_palette", "missing_frame", "missing_file"])
def test_bad_h5_prediction_names_the_file(release, tmp_path, caplog, problem):
    preds = noisy_predictions(release)
    if problem == "size":
        preds[("vidB", 2)] = preds[("vidB", 2)][:, :-1]
    elif problem == "off_palette":
        preds[("vidB", 2)][3, 3] = 40  # ends in 0: no palette colour
    else:
        del preds[("vidB", 2)]
    h5 = write_h5_preds(tmp_path / "h5", preds)
    if problem == "missing_frame":
        with create_cache(h5 / "vidB.h5", stage="predict", module="pipeline.evaluate",
                          config={}, format_version=1) as f:
            f.create_dataset("labels", data=np.zeros((1, 16, 21), np.uint8))
            f.create_dataset("frame_ids", data=np.array([5], np.int32))
    rc, _ = run(tmp_path, "--release", release, "--pred-h5", h5)
    assert rc == 1
    assert str(h5 / "vidB.h5") in caplog.text
    if problem == "missing_frame":
        assert "frame 2" in caplog.text


def test_tiny_synthetic_release_with_index(tiny_release, tmp_path):
    from pipeline.index import main as index_main
    from pipeline.index import read_index

    index = tmp_path / "frames.csv"
    assert index_main(["--release", str(tiny_release), "--out", str(index), "--no-probe"]) == 0
    n_test = int((read_index(index).split == "test").sum())
    rc, with_index = run(tmp_path, "--release", tiny_release, "--index", index,
                         "--pred-png", tiny_release / "Annotations/col")
    assert rc == 0
    assert with_index["meta"]["n_frames"] == n_test > 0
    assert with_index["meta"]["synthetic"] is True
    for setting in metrics(with_index).values():
        assert (setting["ave"], setting["glo"], setting["miou"]) == (100.0, 100.0, 100.0)
    rc, without = run(tmp_path, "--release", tiny_release,
                      "--pred-png", tiny_release / "Annotations/col")
    assert rc == 0 and without["meta"]["n_frames"] == n_test


def test_help():
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
