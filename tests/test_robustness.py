"""Bad inputs through the real stage CLIs, killed jobs, one bad video in a Snakemake run, and
same-seed determinism. The table of cases is in docs/architecture.md ("Robustness").

Every bad input must give a clear error that names the offending file, exit code 1, and leave
no finished-looking output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, TINY_SYNTH
from pipeline import frames as frames_stage
from pipeline import index as index_stage
from pipeline.config import stage_config
from pipeline.errors import DataError
from pipeline.flow.stage import FlowConfig, compute_flow
from pipeline.frames import FramesConfig, read_frames_cache, write_frames_cache
from pipeline.index import read_index
from pipeline.masks import run as masks_stage
from pipeline.masks.cache import read_masks_cache
from pipeline.region import predict as predict_stage

DIS_FAST = json.dumps({"backend": "dis", "dis_preset": "ultrafast"})


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def release(tiny_release, tmp_path) -> Path:
    """A private copy of the tiny synthetic release (tests corrupt it)."""
    return Path(shutil.copytree(tiny_release, tmp_path / "Release"))


def make_index(release: Path, out: Path) -> Path:
    assert index_stage.main(["--release", str(release), "--out", str(out)]) == 0
    return out


def first_row(index: Path):
    return read_index(index).iloc[0]


def rename_video(release: Path, old: str, new: str) -> None:
    """Give video ``old`` the id ``new`` everywhere in the release."""
    vs = release / "videoset.csv"
    vs.write_text("".join((new + line[len(old):]) if line.startswith(old + ",") else line
                          for line in vs.read_text().splitlines(keepends=True)))
    (release / "clips320H" / f"{old}.mp4").rename(release / "clips320H" / f"{new}.mp4")
    for kind in ("mat", "col"):
        (release / "Annotations" / kind / old).rename(release / "Annotations" / kind / new)


def errors(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def no_outputs(out: Path) -> bool:
    """Neither the output nor a temporary file of it exists."""
    return not out.exists() and not list(out.parent.glob(f"{out.name}.tmp.*"))


# -- the frames stage ---------------------------------------------------------------------------
GARBAGE_MP4 = b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(3000)


@pytest.mark.parametrize("content", [b"", GARBAGE_MP4], ids=["empty", "garbage"])
def test_corrupt_clip_fails_frames_stage(release, tmp_path, caplog, content):
    index = make_index(release, tmp_path / "index.csv")
    row = first_row(index)
    clip = release / row["clip"]
    clip.write_bytes(content)
    out = tmp_path / "frames" / f"{row.video}.h5"
    rc = frames_stage.main(["--release", str(release), "--index", str(index),
                            f"--video={row.video}", "--out", str(out)])
    assert rc == 1
    assert str(clip) in errors(caplog) and "unreadable video" in errors(caplog)
    assert no_outputs(out)


def test_leading_dash_video_id_end_to_end(release, tmp_path):
    """An id starting with '-' works through the real command line (``--video=-abc``)."""
    index = tmp_path / "index.csv"
    vid = read_index(make_index(release, index)).video.iloc[0]
    rename_video(release, vid, "-abc")
    make_index(release, index)
    assert "-abc" in set(read_index(index).video)
    out = tmp_path / "frames" / "-abc.h5"
    proc = subprocess.run([sys.executable, "-m", "pipeline.frames", "--release", str(release),
                           "--index", str(index), "--video=-abc", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cache = read_frames_cache(out)
    assert cache.video == "-abc" and len(cache.annotated) == TINY_SYNTH["annotated"]
    proc = subprocess.run([sys.executable, "-m", "pipeline.flow", "--frames", str(out), "--out",
                           str(tmp_path / "flow" / "-abc.h5"), "--config-json", DIS_FAST],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("vid", ["../evil", "a/b", "a\\b"])
def test_video_id_with_path_separator_refused(release, tmp_path, caplog, vid):
    index = make_index(release, tmp_path / "index.csv")
    out = tmp_path / "frames" / "x.h5"
    rc = frames_stage.main(["--release", str(release), "--index", str(index), f"--video={vid}",
                            "--out", str(out)])
    assert rc == 1 and f"video {vid!r} is not in the index" in errors(caplog)
    assert no_outputs(out)
    # ... and the indexer refuses such an id in videoset.csv, naming file and line
    caplog.clear()
    old = read_index(index).video.iloc[0]
    vs = release / "videoset.csv"
    vs.write_text(vs.read_text().replace(old + ",", vid + ",", 1))
    assert index_stage.main(["--release", str(release), "--out", str(tmp_path / "i2.csv")]) == 1
    assert f"{vs}:" in errors(caplog) and "is not a plain id" in errors(caplog)
    assert no_outputs(tmp_path / "i2.csv")


# -- the index stage ----------------------------------------------------------------------------
def test_frame_past_clip_end_fails_index(release, tmp_path, caplog):
    index = make_index(release, tmp_path / "index.csv")
    row = first_row(index)
    past = release / "Annotations/mat" / row.video / f"{int(row.n_frames) + 5:05d}.mat"
    shutil.copy(release / row["mat"], past)
    out = tmp_path / "index2.csv"
    assert index_stage.main(["--release", str(release), "--out", str(out)]) == 1
    assert str(past) in errors(caplog) and "past the clip's end" in errors(caplog)
    assert no_outputs(out)


# -- .mat files through the masks stage (source gt) ---------------------------------------------
def _truncate(mat: Path) -> None:
    data = mat.read_bytes()
    mat.write_bytes(data[: len(data) // 2])


def _extra_id(mat: Path) -> None:
    with h5py.File(mat, "r+") as f:  # MATLAB N x 1 shows as (1, N) in h5py
        ids = np.asarray(f["id"])
        del f["id"]
        f.create_dataset("id", data=np.concatenate([ids, ids[:, :1]], axis=1))


def _unknown_class(mat: Path) -> None:
    with h5py.File(mat, "r+") as f:
        label = np.asarray(f["reS_id"])
        label[0, 0] = 99
        f["reS_id"][...] = label


@pytest.mark.parametrize("corrupt, message", [
    (_truncate, "unreadable or truncated annotation"),
    (_extra_id, "counts disagree"),
    (_unknown_class, "unknown or invalid class id(s) [99]"),
], ids=["truncated", "mismatched_counts", "unknown_class"])
def test_bad_mat_fails_gt_masks(release, tmp_path, caplog, corrupt, message):
    index = make_index(release, tmp_path / "index.csv")
    row = first_row(index)
    mat = release / row["mat"]
    corrupt(mat)
    out = tmp_path / "masks/gt" / f"{row.video}.h5"
    rc = masks_stage.main([f"--video={row.video}", "--source", "gt", "--index", str(index),
                           "--release", str(release), "--out", str(out)])
    assert rc == 1
    assert str(mat) in errors(caplog) and message in errors(caplog)
    assert no_outputs(out)


def test_empty_region_list(release, tmp_path):
    """A frame with no instance: stored with N = 0, read back as N = 0, and the region model
    still labels every pixel of it (finite scores)."""
    from pipeline.a2d.annotations import FrameAnnotation, read_annotation, write_mat
    from pipeline.region.build import build_stage2_model, stage2_forward
    from pipeline.region.config import RegionConfig
    from pipeline.region.data import resize_regions

    index = make_index(release, tmp_path / "index.csv")
    row = first_row(index)
    mat = release / row["mat"]
    h, w = read_annotation(mat).label.shape
    write_mat(mat, FrameAnnotation(label=np.zeros((h, w), np.uint8),
                                   masks=np.zeros((0, h, w), bool),
                                   boxes=np.zeros((0, 4), np.float32),
                                   ids=np.zeros(0, np.int64)))
    out = tmp_path / "masks/gt" / f"{row.video}.h5"
    assert masks_stage.main([f"--video={row.video}", "--source", "gt", "--index", str(index),
                             "--release", str(release), "--out", str(out)]) == 0
    regions = read_masks_cache(out)[int(row.frame)]
    assert len(regions) == 0 and regions.masks.shape == (0, h, w)

    # as the region dataset does: regions resized to the model's input size
    resized = resize_regions({"boxes": regions.boxes, "scores": regions.scores,
                              "labels": regions.labels, "masks": regions.masks}, (40, 56))
    for context in ("complement", "frame", "none"):
        cfg = stage_config(RegionConfig, "region_model", {
            "input_size": [40, 56], "region_head": {"context_region": context}})
        model = build_stage2_model(cfg, 16).eval()
        batch = {"boxes": [torch.from_numpy(resized["boxes"])],
                 "masks": [torch.from_numpy(resized["masks"])],
                 "region_labels": [torch.from_numpy(resized["labels"])]}
        with torch.no_grad():
            logits = stage2_forward(model, torch.randn(1, 16, 5, 7), batch, (40, 56), 8, 1)
        assert all(torch.isfinite(v).all() for v in logits.values()), context


# -- the flow stage -----------------------------------------------------------------------------
class NaNBackend:
    name, model, checkpoint, batch_size = "nan", "nan", None, 2

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        flow = np.zeros((*first.shape[:3], 2), np.float32)
        flow[-1, 0, 0, 0] = np.nan
        return flow


def test_nan_flow_never_cached(release, tmp_path):
    index = make_index(release, tmp_path / "index.csv")
    row = first_row(index)
    frames = tmp_path / "frames" / f"{row.video}.h5"
    assert frames_stage.main(["--release", str(release), "--index", str(index),
                              f"--video={row.video}", "--out", str(frames)]) == 0
    out = tmp_path / "flow" / f"{row.video}.h5"
    cfg = stage_config(FlowConfig, "flow")
    with pytest.raises(DataError, match=r"flow is NaN/inf for frames \[\d+\]; nothing cached") \
            as exc:
        compute_flow(frames, out, cfg, backend=NaNBackend())
    assert exc.value.path == str(frames)
    assert no_outputs(out)


# -- checkpoints --------------------------------------------------------------------------------
class RunsCode:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def video_with_frames(release, tmp_path):
    index = make_index(release, tmp_path / "index.csv")
    row = first_row(index)
    frames = tmp_path / "frames" / f"{row.video}.h5"
    assert frames_stage.main(["--release", str(release), "--index", str(index),
                              f"--video={row.video}", "--out", str(frames)]) == 0
    return index, row.video, frames


@pytest.mark.parametrize("kind", [
    "text",
    "truncated", "code"])
def test_bad_checkpoint_refused(video_with_frames, tmp_path, caplog, kind):
    """masks (source checkpoint) and predict (baseline) refuse a file that is not a weights file,
    and one that would run code when unpickled (torch.load weights_only=True), naming it."""
    index, video, frames = video_with_frames
    ckpt, marker = tmp_path / "weights.pt", tmp_path / "code_ran"
    if kind == "text":
        ckpt.write_text("these are not weights\n")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(100)}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    else:
        torch.save({"model": {"w": torch.zeros(2)}, "meta": RunsCode(marker)}, ckpt)
    out = tmp_path / "masks/checkpoint" / f"{video}.h5"
    rc = masks_stage.main([f"--video={video}", "--source", "checkpoint", "--index", str(index),
                           "--frames", str(frames), "--weights", str(ckpt), "--out", str(out)])
    assert rc == 1 and str(ckpt) in errors(caplog)
    assert ("refused to load" if kind == "code" else "not a readable PyTorch") in errors(caplog)
    assert no_outputs(out)

    caplog.clear()
    pred = tmp_path / "pred" / f"{video}.h5"
    rc = predict_stage.main(["--model", "baseline", "--index", str(index), f"--video={video}",
                             "--stage1", str(ckpt), "--frames-dir", str(frames.parent),
                             "--out", str(pred)])
    assert rc == 1 and str(ckpt) in errors(caplog)
    assert ("refused to load" if kind == "code" else "not a readable PyTorch") in errors(caplog)
    assert no_outputs(pred)
    assert not marker.exists(), "unpickling ran code"


# -- a job killed while it writes ---------------------------------------------------------------
def big_frames_cache(path: Path, n: int = 60, h: int = 360, w: int = 480) -> None:
    """A frames cache of ``n`` frames of a textured scene panning 2 px per frame: its flow
    cache is n x h x w x 2 float16 (41 MB), long enough to write to be killed mid-write."""
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (h, w + 2 * n, 3), dtype=np.uint8), (0, 0), 3)
    frames = {t: np.ascontiguousarray(scene[:, 2 * t:2 * t + w]) for t in range(1, n + 1)}
    write_frames_cache(path, video="big", split="train", frames=frames,
                       annotated=list(range(2, n, 3)), n_frames=n, fps=24.0,
                       cfg=stage_config(FramesConfig, "frames", {"context": 1}))


def flow_cmd(frames: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.flow", "--frames", str(frames), "--out", str(out),
            "--threads", "1", "--config-json", DIS_FAST]


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys()}


def test_killed_flow_job_leaves_no_cache_and_rerun_matches(tmp_path):
    frames = tmp_path / "frames" / "big.h5"
    big_frames_cache(frames)
    out = tmp_path / "flow" / "big.h5"
    killed_mid_write = False
    for _ in range(3):  # the write is a fraction of a second: retry if it was missed
        proc = subprocess.Popen(flow_cmd(frames, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        tmp = out.parent / f"{out.name}.tmp.{proc.pid}"
        while proc.poll() is None:
            if tmp.exists():  # created by the writer: the job is writing its cache
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_mid_write = True
                break
            time.sleep(0.001)
        if killed_mid_write:
            break
        out.unlink()
    assert killed_mid_write, "the flow job finished before it could be killed while writing"
    assert not out.exists()  # nothing finished-looking: only the .tmp.<pid> of the dead writer
    assert tmp.exists()

    assert subprocess.run(flow_cmd(frames, out), capture_output=True).returncode == 0
    assert not tmp.exists()  # the rerun cleared the stale temporary file
    clean = tmp_path / "flow_clean" / "big.h5"
    assert subprocess.run(flow_cmd(frames, clean), capture_output=True).returncode == 0
    a, b = read_arrays(out), read_arrays(clean)
    assert a.keys() == b.keys() == {"flow", "frame_ids", "pair"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


# -- Snakemake: one bad video, and determinism --------------------------------------------------
def snakemake(workdir: Path, release: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the workflow on an existing release (no synth job), its first 3 videos."""
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "synthetic": {"enabled": False},
        "dataset": {"release": str(release), "max_videos": 3},
        "flow": {"backend": "dis", "dis_preset": "ultrafast"},
        # one job per video: a bad video fails its whole job, and Snakemake removes a failed
        # job's outputs (in a shard, its other videos' too)
        "cluster": {"videos_per_job": 1}}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(cfg), "--workflow-profile", "none",
           "--cores", "2", "--scheduler", "greedy", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def fingerprint(path: Path) -> tuple[int, dict[str, bytes]]:
    return path.stat().st_mtime_ns, {k: v.tobytes() for k, v in read_arrays(path).items()}


@pytest.mark.slow
def test_keep_going_one_corrupt_clip(release, tmp_path):
    """`snakemake --keep-going all_flow` with one video's clip corrupted after indexing: the
    other videos get their frames and flow caches, the bad one none, its log names the clip,
    and caches made before are neither lost nor redone."""
    work = tmp_path / "work"
    work.mkdir()
    first, bad, other = [line.split(",")[0] for line in
                         (release / "videoset.csv").read_text().splitlines()[:3]]
    targets = [f"results/{s}/{first}.h5" for s in ("frames", "flow")]
    proc = snakemake(work, release, *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [work / t for t in targets]
    before = [fingerprint(p) for p in done]

    clip = release / "clips320H" / f"{bad}.mp4"
    with open(clip, "r+b") as f:  # in place: the release folder itself looks unchanged
        f.write(np.random.default_rng(0).bytes(clip.stat().st_size))
    proc = snakemake(work, release, "--keep-going", "all_flow")
    assert proc.returncode != 0
    res = work / "results"
    assert (res / f"flow/{other}.h5").is_file() and (res / f"frames/{other}.h5").is_file()
    assert not (res / f"frames/{bad}.h5").exists() and not (res / f"flow/{bad}.h5").exists()
    assert str(clip) in (res / f"logs/frames/{bad}.log").read_text()
    assert [fingerprint(p) for p in done] == before  # nothing already cached lost or redone


def test_same_seed_identical_outputs(tmp_path):
    """synth + index + frames + flow twice from scratch through the stage CLIs, same seed, on
    the CPU: identical index and identical frame and flow arrays."""
    from pipeline.flow.__main__ import main as flow_main
    from pipeline.synth.__main__ import main as synth_main

    synth = json.dumps(dict(TINY_SYNTH, videos=2))
    results = []
    for run in ("a", "b"):
        root = tmp_path / run
        release = root / "Release"
        assert synth_main(["--out", str(release), "--config-json", synth]) == 0
        index = make_index(release, root / "index.csv")
        for vid in sorted(read_index(index).video.unique()):
            frames = root / "frames" / f"{vid}.h5"
            assert frames_stage.main(["--release", str(release), "--index", str(index),
                                      f"--video={vid}", "--out", str(frames)]) == 0
            assert flow_main(["--frames", str(frames), "--out", str(root / "flow" / f"{vid}.h5"),
                              "--threads", "2"]) == 0  # DIS medium, the embedded default
        results.append(root)
    a, b = results
    assert (a / "index.csv").read_text() == (b / "index.csv").read_text()
    videos = sorted(read_index(a / "index.csv").video.unique())
    assert len(videos) == 2
    for stage in ("frames", "flow"):
        for vid in videos:
            x, y = read_arrays(a / f"{stage}/{vid}.h5"), read_arrays(b / f"{stage}/{vid}.h5")
            assert x.keys() == y.keys() and len(x) == 3
            for key in x:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{stage}/{vid} {key}")
