"""``python -m pipeline.predict`` on a video that belongs to no dataset: the region model (with a
trained segmenter's masks) and the baseline, trained for a few steps on the tiny release, and a
corrupt file."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_STAGES
from region_support import build_caches
from test_region_train import stage1, stage2, tiny_cfg

from pipeline.a2d.annotations import read_col_png
from pipeline.a2d.classes import is_valid_label
from pipeline.config import stage_config
from pipeline.masks.config import SegmenterConfig
from pipeline.masks.train import train_segmenter
import pipeline.predict as predict_mod
from pipeline.predict import main, overlay_frame, remove_stale_work
from pipeline.provenance import file_sha256
from pipeline.region.features import extract_features
from pipeline.video import read_frames

H, W, N_FRAMES = 50, 70, 9


@pytest.fixture(scope="module")
def trained(tiny_release, tmp_path_factory):
    """Stage-1 (two-stream) and stage-2 checkpoints and a segmenter, a few steps each."""
    root = tmp_path_factory.mktemp("predict_models")
    caches = build_caches(tiny_release, root)
    stage1(tiny_cfg(), caches, root / "stage1.pt")
    for video in sorted(pd.read_csv(caches["index"], dtype={"video": str}).video.unique()):
        extract_features(index=caches["index"], video=video, frames_dir=caches["frames"],
                         flow_dir=caches["flow"], streams="rgbflow", stage1=root / "stage1.pt",
                         out=root / "features" / f"{video}.h5", device_name="cpu")
    stage2(tiny_cfg(), caches, root, root / "stage2.pt")
    seg = root / "segmenter"
    train_segmenter(stage_config(SegmenterConfig, "segmenter", TINY_STAGES["segmenter"]),
                    index=caches["index"], release=caches["release"],
                    frames_dir=caches["frames"], out=seg / "model.pt",
                    metrics_path=seg / "metrics.json", losses_path=seg / "losses.csv",
                    checkpoint_dir=seg / "checkpoints")
    config = root / "config.yaml"
    # score_threshold 0: a segmenter trained for 2 steps scores low, and the region model should
    # get regions to pool from.
    config.write_text(yaml.safe_dump({
        "flow": {"backend": "dis", "dis_preset": "ultrafast"},
        "masks": {"score_threshold": 0.0, "top_n": 4},
        "segmenter": {"device": "cpu"}, "region_model": {"device": "cpu"}}))
    return {"stage1": root / "stage1.pt", "stage2": root / "stage2.pt",
            "segmenter": seg / "model.pt", "config": config}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 70 x 50, 9-frame mp4 written here: a disc moving over noise, each frame different."""
    path = tmp_path_factory.mktemp("clip") / "my holiday.mp4"
    rng = np.random.default_rng(5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (W, H))
    for t in range(N_FRAMES):
        img = (rng.random((H, W, 3)) * 80 + 40).astype(np.uint8)
        cv2.circle(img, (10 + 6 * t, 25), 9, (30, 60 + 20 * t, 220), -1)
        writer.write(img)
    writer.release()
    return path


def args(trained, clip, out, *extra):
    return [str(clip), "--out", str(out), "--stage1", str(trained["stage1"]),
            "--config", str(trained["config"]), *extra]


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[..., ::-1])
    cap.release()
    return frames


def check_outputs(out, clip, frame_ids):
    """labels.h5 layout, PNGs == labels, overlay == blended frames in order; returns attrs and
    the labels."""
    assert sorted(p.name for p in out.iterdir()) == ["labels.h5", "overlay.mp4", "png"]
    with h5py.File(out / "labels.h5", "r") as f:
        labels, ids, attrs = f["labels"][:], f["frame_ids"][:], dict(f.attrs)
        assert f["labels"].chunks == (1, H, W) and f["labels"].compression == "gzip"
    assert attrs["stage"] == "predict" and attrs["format_version"] == 1
    assert ids.dtype == np.int32 and ids.tolist() == frame_ids
    assert labels.dtype == np.uint8 and labels.shape == (len(frame_ids), H, W)
    assert is_valid_label(labels).all()
    assert attrs["video_path"] == str(clip.resolve())
    assert attrs["video_sha256"] == file_sha256(clip)
    assert sorted(p.name for p in (out / "png").iterdir()) == [f"{i:05d}.png" for i in frame_ids]
    for i, lab in zip(frame_ids, labels):
        np.testing.assert_array_equal(read_col_png(out / "png" / f"{i:05d}.png", (H, W)), lab)
    decoded = read_frames(clip, frame_ids)
    overlay = read_video(out / "overlay.mp4")
    assert len(overlay) == len(frame_ids) and overlay[0].shape == (H, W, 3)
    expected = [overlay_frame(decoded[i], lab).astype(np.float32)
                for i, lab in zip(frame_ids, labels)]
    for k, got in enumerate(overlay):
        errors = [np.abs(got.astype(np.float32) - e).mean() for e in expected]
        # mp4v is lossy, but each overlay frame is far closer to its own frame than to the rest
        assert int(np.argmin(errors)) == k and errors[k] < 8, errors
    return attrs, labels


def test_region_model_predicts_any_video(trained, clip, tmp_path, caplog):
    out = tmp_path / "pred"
    caplog.set_level(logging.INFO)
    assert main(args(trained, clip, out, "--stage2", str(trained["stage2"]), "--segmenter",
                     str(trained["segmenter"]), "--every", "4")) == 0
    # frame 9 is the last: its flow comes from the pair (8, 9), decoded although not predicted
    attrs, _ = check_outputs(out, clip, [1, 5, 9])
    assert attrs["model"] == "region" and attrs["streams"] == "rgbflow"
    assert attrs["stage2_sha256"] == file_sha256(trained["stage2"])
    assert attrs["segmenter_sha256"] == file_sha256(trained["segmenter"])
    assert attrs["stage1_sha256"] == file_sha256(trained["stage1"])
    # the masks stage ran on the decoded frames and found regions for the region model
    counts = [r.getMessage() for r in caplog.records if r.name == "pipeline.masks.run"
              and "regions per frame" in r.getMessage()]
    assert len(counts) == 1 and "[0, 0, 0]" not in counts[0], counts


def test_baseline_predicts_any_video(trained, clip, tmp_path):
    out = tmp_path / "pred"
    assert main(args(trained, clip, out, "--max-frames", "4")) == 0
    attrs, _ = check_outputs(out, clip, [1, 2, 3, 4])
    assert attrs["model"] == "baseline" and attrs["stage2"] == "" and attrs["segmenter"] == ""


def test_baseline_pairs_are_valid_and_overlaid(trained, clip, tmp_path):
    # A few training steps predict background everywhere. Bias the heads against background
    # and towards actor "ball" and action "eating" (3 and 3): the invalid pair 33 is then the
    # favourite of each head, and the maps must hold valid pairs with ball or eating instead.
    obj = torch.load(trained["stage1"], weights_only=True)
    for head in ("actor_head", "action_head"):
        bias = obj["model"][f"{head}.branches.0.bias"]
        bias[0] -= 50.0
        bias[3] += 10.0
    biased = tmp_path / "biased_stage1.pt"
    torch.save(obj, biased)
    out = tmp_path / "pred"
    assert main(args(trained, clip, out, "--max-frames", "2")) == 0
    # a second run into the same folder replaces the outputs, leaving no stale PNG behind
    argv = args(trained, clip, out, "--every", "3")
    argv[argv.index("--stage1") + 1] = str(biased)
    assert main(argv) == 0
    attrs, labels = check_outputs(out, clip, [1, 4, 7])
    assert set(np.unique(labels).tolist()) <= {13, 34, 35, 36, 39, 43, 63, 73}
    assert attrs["stage1_sha256"] == file_sha256(biased)


def test_overlay_frame_blends_labelled_pixels_only():
    rgb = np.array([[[100, 50, 200], [10, 20, 30]]], np.uint8)
    label = np.array([[0, 11]], np.uint8)  # 11: adult-climbing, palette (52, 1, 1)
    np.testing.assert_array_equal(overlay_frame(rgb, label),
                                  [[[100, 50, 200], [31, 10, 16]]])


@pytest.mark.parametrize("name,content,problem", [
    ("broken.mp4", b"", "unreadable video"),
    ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20, "unreadable video"),
    ("readme.txt", b"A README, renamed.\nFFmpeg's tty demuxer renders it as frames.\n" * 60,
     "not a video"),
    ("missing.mp4", None, "clip not found"),
], ids=["empty", "garbage", "text", "missing"])
def test_bad_video_refused_creating_nothing(trained, tmp_path, caplog, name, content, problem):
    bad = tmp_path / "in" / name
    bad.parent.mkdir()
    if content is not None:
        bad.write_bytes(content)
    out = tmp_path / "runs" / "pred"
    assert main(args(trained, bad, out)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f"{bad}: {problem}"), errors
    assert "\n" not in errors[0]
    # neither --out nor its parent nor a work folder was created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_foreign_out_folder_refused(trained, clip, tmp_path, caplog):
    out = tmp_path / "Documents"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    assert main(args(trained, clip, out, "--max-frames", "2")) == 1
    assert f"{out}: --out holds files that are not a pipeline.predict run (thesis.tex)" \
        in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]


def snapshot(folder):
    return {p.relative_to(folder): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


KILL_SCRIPT = """
import os, signal, sys
import pipeline.predict as predict
def dying(*args, **kwargs):  # killed after PNGs and overlay, as labels.h5 is about to be written
    os.kill(os.getpid(), signal.SIGKILL)
predict.create_cache = dying
sys.exit(predict.main(sys.argv[1:]))
"""


def test_killed_run_leaves_previous_run_and_next_run_cleans_up(trained, clip, tmp_path):
    out = tmp_path / "pred"
    assert main(args(trained, clip, out, "--max-frames", "2")) == 0
    before = snapshot(out)
    assert sorted(str(p) for p in before) == ["labels.h5", "overlay.mp4", "png/00001.png",
                                              "png/00002.png"]
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT,
                           *args(trained, clip, out, "--every", "3")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert snapshot(out) == before  # the previous run, whole and unchanged
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".pred.predict-")]
    assert len(stale) == 1 and (stale[0] / "run/overlay.mp4").is_file(), stale
    # the next run removes the killed run's folder and replaces the previous run whole
    assert main(args(trained, clip, out, "--every", "3")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]
    check_outputs(out, clip, [1, 4, 7])


def test_failed_write_leaves_previous_run(trained, clip, tmp_path, monkeypatch):
    out = tmp_path / "pred"
    assert main(args(trained, clip, out, "--max-frames", "2")) == 0
    before = snapshot(out)

    def broken(path, *_):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(predict_mod, "write_overlay", broken)
    with pytest.raises(OSError, match="No space left"):
        main(args(trained, clip, out, "--every", "3"))
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]  # work folder removed


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_work_folders_removed_live_ones_kept(tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    dead = tmp_path / f".pred.predict-{dead_pid()}-abc_1"
    (dead / "run").mkdir(parents=True)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive_proc:
        try:
            time.sleep(0.2)
            alive = tmp_path / f".pred.predict-{alive_proc.pid}-xyz"
            (alive / "run").mkdir(parents=True)
            # the same live pid on a folder older than that process: the pid was reused
            reused = tmp_path / f".pred.predict-{alive_proc.pid}-old"
            reused.mkdir()
            os.utime(reused, (time.time() - 3600, time.time() - 3600))
            other = tmp_path / ".other.predict-1-abc"  # another output folder's: not ours
            other.mkdir()
            assert sorted(remove_stale_work(out)) == sorted([dead, reused])
        finally:
            alive_proc.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["pred", alive.name, other.name])


def test_kill_during_swap_restores_previous_run(tmp_path):
    out = tmp_path / "pred"
    stale = tmp_path / f".pred.predict-{dead_pid()}-q1"
    (stale / "previous" / "png").mkdir(parents=True)
    (stale / "previous" / "labels.h5").write_bytes(b"previous run")
    (stale / "run").mkdir()  # the new run, never swapped in
    remove_stale_work(out)
    assert (out / "labels.h5").read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]


def test_stage2_of_another_front_end_refused(trained, clip, tmp_path, caplog):
    other = tmp_path / "other_stage1.pt"
    obj = torch.load(trained["stage1"], weights_only=True)
    obj["meta"]["steps"] += 1  # same architecture, different file
    torch.save(obj, other)
    out = tmp_path / "pred"
    assert main([str(clip), "--out", str(out), "--stage1", str(other), "--stage2",
                 str(trained["stage2"]), "--segmenter", str(trained["segmenter"]),
                 "--config", str(trained["config"])]) == 1
    assert f"{trained['stage2']}: was trained on another stage-1" in caplog.text
    assert not (out / "labels.h5").exists()
