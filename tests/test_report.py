"""The run report: timing from benchmark TSVs, figures, qualitative panel, the HTML page."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest
from region_support import regions_from_gt, write_masks

from pipeline.a2d.annotations import read_annotation
from pipeline.config import stage_config
from pipeline.evaluate import main as evaluate_main
from pipeline.frames import FramesConfig, cache_video
from pipeline.h5cache import create_cache
from pipeline.index import DatasetConfig, build_index, read_index
from pipeline.metrics import ConfusionMatrix
from pipeline.report import confusion, figures, timing
from pipeline.report.__main__ import main as report_main
from pipeline.report.qualitative import select_frames
from pipeline.report.timing import main as timing_main
from pipeline.shards import make_shards

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_predictions(folder, release, table, wrong=()):
    """GT-as-prediction caches of the test videos (stage ``predict`` layout); frames in
    ``wrong`` are predicted all background."""
    for video, rows in table[table.split == "test"].groupby("video"):
        ids = sorted(int(f) for f in rows.frame)
        labels = []
        for fr in ids:
            gt = read_annotation(release / rows[rows.frame == fr].mat.iloc[0]).label
            labels.append(np.zeros_like(gt) if (video, fr) in wrong else gt)
        with create_cache(folder / f"{video}.h5", stage="predict", module="pipeline.evaluate",
                          config={"model": folder.name}, format_version=1, source="unit-test") as f:
            f.create_dataset("labels", data=np.stack(labels), chunks=(1, *labels[0].shape))
            f.create_dataset("frame_ids", data=np.array(ids, np.int32))
    return folder


@pytest.fixture(scope="module")
def run(tiny_release, tmp_path_factory):
    """A fake but valid results tree: index, frames, gt masks, two prediction folders, their
    evaluation JSONs, loss CSVs and benchmark TSVs."""
    root = tmp_path_factory.mktemp("results")
    index = root / "index" / "frames.csv"
    index.parent.mkdir()
    table, _ = build_index(DatasetConfig(str(tiny_release), None, "fail", None))
    table.to_csv(index, index=False)
    table = read_index(index)
    fcfg = stage_config(FramesConfig, "frames", {"context": 0})
    rng = np.random.default_rng(0)
    for video, rows in table.groupby("video"):
        cache_video(tiny_release, index, video, root / "frames" / f"{video}.h5", fcfg)
        regions = {int(r.frame): regions_from_gt(tiny_release / r.mat, "gt", rng)
                   for r in rows.itertuples()}
        write_masks(root / "masks" / "gt" / f"{video}.h5", video, regions, "gt")
    test = table[table.split == "test"]
    first = (test.video.iloc[0], int(test.frame.iloc[0]))
    preds = {"baseline_rgbflow": write_predictions(root / "predictions" / "baseline_rgbflow",
                                                   tiny_release, table, wrong={first}),
             "region_rgbflow_gt": write_predictions(root / "predictions" / "region_rgbflow_gt",
                                                    tiny_release, table)}
    evals = {}
    for name, folder in preds.items():
        evals[name] = root / "eval" / f"{name}.json"
        assert evaluate_main(["--release", str(tiny_release), "--index", str(index),
                              "--pred-h5", str(folder), "--out", str(evals[name])]) == 0
    losses = {}
    for name, cols in (("stage1_rgbflow", ["step", "loss"]),
                       ("segmenter", ["step", "lr", "loss", "loss_mask", "loss_box"])):
        steps = np.arange(1, 21)
        data = {"step": steps, **{c: (2.0 / steps if c.startswith("loss") else 0.01)
                                  for c in cols[1:]}}
        losses[name] = root / "loss" / f"{name}.csv"
        losses[name].parent.mkdir(exist_ok=True)
        pd.DataFrame(data)[cols].to_csv(losses[name], index=False)
    bench = root / "benchmarks"
    seconds = {}
    for stage, split in (("flow", None), ("masks/gt", None), ("region_features/rgbflow", None),
                         ("predict_region/rgbflow_gt", "test"),
                         ("predict_baseline/rgbflow", "test")):
        rows = table if split is None else table[table.split == split]
        for i, video in enumerate(sorted(rows.video.unique())):
            s = 0.5 + 0.25 * i + len(stage) / 100  # distinct per job and stage
            seconds[(stage, video)] = s
            path = bench / stage / f"{video}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(BENCH_HEADER + f"{s:.4f}\t0:00:01\t150.5\t500.0\t70.0\t90.0\t0.00\t"
                                           f"0.44\t29.7\t{s / 2:.4f}\n")
    return {"root": root, "release": tiny_release, "index": index, "table": table,
            "preds": preds, "evals": evals, "losses": losses, "bench": bench,
            "seconds": seconds}


def is_png(path) -> bool:
    img = cv2.imread(str(path))
    return img is not None and img.shape[0] > 0 and img.shape[1] > 0 and path.stat().st_size > 0


# -- timing --------------------------------------------------------------------------------------

def test_read_benchmark_means_repeats(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text(BENCH_HEADER + "1.0\t0:00:01\tNA\t1\t1\t1\t0\t0\t1\t0.5\n"
                                   "3.0\t0:00:03\t200\t1\t1\t1\t0\t0\t1\t1.5\n")
    got = timing.read_benchmark(path)
    assert got["s"] == pytest.approx(2.0) and got["cpu_time"] == pytest.approx(1.0)
    assert got["max_rss"] == pytest.approx(200.0)
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(Exception, match="bad.tsv"):
        timing.read_benchmark(tmp_path / "bad.tsv")


def test_timing_per_frame_is_seconds_over_frames(run):
    out = run["root"] / "tables" / "timing"
    stages = ["flow", "masks/gt", "region_features/rgbflow", "predict_region/rgbflow_gt",
              "predict_baseline/rgbflow"]
    argv = ["--index", str(run["index"]), "--benchmarks", str(run["bench"]), "--out", str(out)]
    assert timing_main(argv + [x for s in stages for x in ("--stage", s)]) == 0
    table = pd.read_csv(out.with_name("timing.csv"))
    frames = run["table"].groupby("video").size()
    for stage in stages:
        row = table[table.stage == stage].iloc[0]
        jobs = {v: s for (st, v), s in run["seconds"].items() if st == stage}
        n = int(sum(frames[v] for v in jobs))
        assert row.frames == n and row.jobs == len(jobs) and row.jobs_missing == 0
        assert row.ms_per_frame == pytest.approx(1000 * sum(jobs.values()) / n, abs=1e-3)
        assert row.cpu_ms_per_frame == pytest.approx(500 * sum(jobs.values()) / n, abs=1e-3)
    assert table[table.stage == "flow"].paper_ms_per_frame.iloc[0] == 350
    assert table[table.stage == "masks/gt"].paper_ms_per_frame.iloc[0] == 300
    seg = table[table.what.str.startswith("segmentation network")].iloc[0]
    parts = table[table.stage.isin(["region_features/rgbflow", "predict_region/rgbflow_gt"])]
    assert seg.ms_per_frame == pytest.approx(parts.ms_per_frame.sum(), abs=1e-2)
    assert seg.paper_ms_per_frame == 450
    assert set(table.paper_ms_per_frame.dropna()) >= {350, 300, 450, 1100, 395}
    md = out.with_name("timing.md").read_text()
    assert "| flow |" in md and "350" in md


def test_timing_missing_stage_is_not_run(run, tmp_path):
    out = tmp_path / "timing"
    assert timing_main(["--index", str(run["index"]), "--benchmarks", str(tmp_path / "none"),
                        "--stage", "flow", "--out", str(out)]) == 0
    row = pd.read_csv(out.with_name("timing.csv")).iloc[0]
    assert row.jobs == 0 and np.isnan(row.ms_per_frame)
    assert timing_main(["--index", str(run["index"]), "--benchmarks", str(tmp_path),
                        "--stage", "nosuchrule", "--out", str(out)]) == 1


def test_timing_reads_shard_files_and_falls_back_to_one_video_files(run, tmp_path):
    """cluster.videos_per_job > 1: a shard's s<hex>.tsv counts for all its videos; a shard
    without one is read from its videos' <video>.tsv (one-video jobs); videos with neither are
    missing."""
    frames = run["table"].groupby("video").size()
    shards = list(make_shards(frames.index, 2).items())
    assert len(shards) >= 3, "the tiny release must give several shards"
    (with_file, vids_a), (per_video, vids_b), (absent, vids_c) = shards[:3]
    folder = tmp_path / "flow"
    folder.mkdir()
    rows = {folder / f"{with_file}.tsv": 4.0, folder / f"{vids_b[0]}.tsv": 1.5}
    for path, s in rows.items():
        path.write_text(BENCH_HEADER + f"{s}\t0:00:01\t100\t1\t1\t1\t0\t0\t1\t{s / 2}\n")
    got = timing.stage_timing(tmp_path, run["index"], "flow", videos_per_job=2)
    n = int(frames[vids_a].sum() + frames[vids_b[0]])
    rest = sum(len(v) for _, v in shards[3:])
    assert got["jobs"] == 2 and got["frames"] == n
    assert got["jobs_missing"] == len(vids_b) - 1 + len(vids_c) + rest
    assert got["ms_per_frame"] == pytest.approx(1000 * 5.5 / n)
    # the same files read as one-video jobs: the shard file is not one, so it is not read
    one = timing.stage_timing(tmp_path, run["index"], "flow", videos_per_job=1)
    assert one["jobs"] == 1 and one["frames"] == int(frames[vids_b[0]])


# -- figures and confusion -----------------------------------------------------------------------

def test_confusion_round_trip_and_recompute(run, tmp_path):
    cm = ConfusionMatrix()
    gt = np.array([[0, 11], [11, 0]], np.uint8)
    cm.update(gt, np.array([[0, 11], [12, 0]], np.uint8))
    confusion.save_counts(tmp_path / "c.npz", cm)
    assert (confusion.load_counts(tmp_path / "c.npz") == cm.counts).all()
    (tmp_path / "c.json").write_text(json.dumps({"confusion_counts": cm.counts.tolist()}))
    assert (confusion.load_counts(tmp_path / "c.json") == cm.counts).all()
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(Exception, match="confusion_counts"):
        confusion.load_counts(tmp_path / "e.json")
    # GT as prediction: every GT pixel lies on the diagonal
    counts = confusion.counts_from(run["preds"]["region_rgbflow_gt"], run["release"], run["index"])
    assert counts.sum() > 0 and counts.sum() == np.trace(counts)


def test_figures_are_pngs(run, tmp_path):
    results = {n: json.loads(p.read_text()) for n, p in run["evals"].items()}
    counts = confusion.counts_from(run["preds"]["baseline_rgbflow"], run["release"], run["index"])
    pngs = [figures.per_class_bars(results, "joint", tmp_path / "bars.png"),
            figures.confusion_heatmap(counts, "joint", tmp_path / "cj.png"),
            figures.confusion_heatmap(counts, "actor", tmp_path / "ca.png"),
            figures.loss_curves(run["losses"], tmp_path / "loss.png")]
    for png in pngs:
        assert is_png(png)
    pct, rows, cols = figures.setting_percent(counts, "actor")
    assert pct.shape == (8, 8) and len(cols) == 8
    finite = pct[np.isfinite(pct).all(axis=1)]
    np.testing.assert_allclose(finite.sum(axis=1), 100.0)
    assert not list(tmp_path.glob("*.tmp.*"))  # atomic writes leave nothing behind


def test_select_frames_is_deterministic(run):
    picks = select_frames(run["index"], 2)
    assert picks == select_frames(run["index"], 2) and len(picks) == 2
    test = run["table"][run["table"].split == "test"]
    assert all(((test.video == v) & (test.frame == f)).any() for v, f in picks)
    assert len(select_frames(run["index"], 99)) == test.video.nunique()


# -- the page ------------------------------------------------------------------------------------

def _img_sources(page: str) -> list[str]:
    return re.findall(r'data-src="([^"]+)"', page)


def test_report_page(run, tmp_path):
    root = run["root"]
    tables = root / "tables"
    timing_main(["--index", str(run["index"]), "--benchmarks", str(run["bench"]),
                 "--stage", "flow", "--stage", "masks/gt", "--out", str(tables / "timing")])
    (tables / "dang_table1.md").write_text("# Dang Table 1\n\nOur numbers: x\n\n"
                                           "| method | glo |\n|---|---:|\n| ours | 12.3 |\n")
    out = tmp_path / "report"
    argv = ["--results", str(root), "--release", str(run["release"]), "--out", str(out),
            "--eval", *[f"{n}={p}" for n, p in run["evals"].items()],
            "--confusion", f"baseline_rgbflow={run['preds']['baseline_rgbflow']}",
            "--loss", *[f"{n}={p}" for n, p in run["losses"].items()],
            "--tables", str(tables / "dang_table1.md"), "--timing", str(tables / "timing.csv"),
            "--qualitative", *[f"{n}={p}" for n, p in run["preds"].items()],
            "--masks-dir", str(root / "masks" / "gt"), "--n-frames", "2",
            "--config-json", json.dumps({"synthetic": {"enabled": True}})]
    assert report_main(argv) == 0
    page = (out / "index.html").read_text()
    figs = sorted(p.relative_to(out).as_posix() for p in (out / "figures").glob("*.png"))
    assert {"figures/per_class_joint.png", "figures/confusion_baseline_rgbflow_joint.png",
            "figures/loss_curves.png", "figures/timing.png",
            "figures/qualitative.png"} <= set(figs)
    assert sorted(_img_sources(page)) == figs  # every figure is on the page, embedded
    assert page.count("data:image/png;base64,") == len(figs)
    for fig in figs:
        assert is_png(out / fig)
    assert "SYNTHETIC dataset" in page
    for name, path in run["evals"].items():
        result = json.loads(path.read_text())
        assert name in page
        for s in ("joint", "actor", "action"):
            for k in ("miou", "ave", "glo"):
                assert f">{result[s][k]:.1f}<" in page
            assert f">{result['video_averaged'][s]:.1f}<" in page
    assert ("per-frame, video-averaged IoU, as MED-VT reports; not the A2D protocol (joint)"
            in page)
    base = json.loads(run["evals"]["baseline_rgbflow"].read_text())
    assert base["joint"]["miou"] < 100  # the wrong frame shows: values are not all 100.0
    assert "Dang Table 1" in page and ">12.3<" in page
    assert "Not run" not in page
    assert "&quot;enabled&quot;: true" in page  # the config is shown


def test_report_missing_inputs_say_not_run(run, tmp_path):
    out = tmp_path / "report"
    argv = ["--results", str(run["root"]), "--release", str(run["release"]), "--out", str(out),
            "--eval", f"ours={tmp_path / 'absent.json'}",
            "--loss", f"stage2={tmp_path / 'absent.csv'}", "--timing", str(tmp_path / "t.csv")]
    assert report_main(argv) == 0
    page = (out / "index.html").read_text()
    for section in ("Headline metrics", "Per-class accuracy", "Confusion matrices",
                    "Training curves", "Time per frame", "Qualitative results", "Config"):
        start = page.index(f">{section}</h2>")
        end = page.find("<h2", start + 1)
        assert "Not run" in page[start:end if end > 0 else None], section
    assert "absent.json" in page and "Dataset: unknown" in page
    assert not (out / "figures").exists() or not list((out / "figures").iterdir())


def test_report_rejects_malformed_eval(run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"joint": 1}')
    assert report_main(["--results", str(run["root"]), "--release", str(run["release"]),
                        "--out", str(tmp_path / "r"), "--eval", f"x={bad}"]) == 1
