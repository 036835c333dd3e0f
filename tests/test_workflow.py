"""The Snakemake workflow on the tiny synthetic dataset: dry run, real run, rerun triggers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from pipeline.a2d.classes import is_valid_label
from pipeline.index import read_index

from conftest import ROOT, TINY_STAGES, TINY_SYNTH


def write_config(tmp: Path, **sections) -> Path:
    cfg = {"synthetic": dict(TINY_SYNTH), "dataset": {"release": "results/synthetic/Release"}}
    for name, value in sections.items():
        cfg.setdefault(name, {}).update(value)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), "--workflow-profile", "none",
           "--cores", "2", "--scheduler", "greedy", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_dry_run(tmp_path):
    proc = snakemake(tmp_path, write_config(tmp_path), "-n")
    assert proc.returncode == 0, proc.stderr
    assert "synth" in proc.stdout and "index" in proc.stdout


def test_bad_config_rejected_before_any_job(tmp_path):
    cfg = write_config(tmp_path, synthetic={"videos": 0})
    proc = snakemake(tmp_path, cfg, "-n")
    assert proc.returncode != 0
    assert "Error validating config" in proc.stderr + proc.stdout


@pytest.mark.parametrize("key", ["weights", "motion_weights"])
def test_e2e_weights_segmenter_is_a_dag_edge(tmp_path, key):
    """e2e_model.weights (or motion_weights): segmenter -> train_segmenter runs before e2e_train,
    whose model file is an input and whose config names it (the stage only sees a path)."""
    cfg = write_config(tmp_path, e2e_model={key: "segmenter"})
    built = snakemake(tmp_path, cfg, "results/index/frames.csv")
    assert built.returncode == 0, built.stderr[-2000:]
    proc = snakemake(tmp_path, cfg, "-n", "--printshellcmds", "results/e2e/full/model.pt")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rule train_segmenter:" in proc.stdout
    train = proc.stdout[proc.stdout.index("rule e2e_train:"):]
    assert "results/segmenter/model.pt" in train.split("rule ")[1]  # its input list
    assert f'"{key}":"results/segmenter/model.pt"' in train


@pytest.mark.slow
def test_whole_pipeline_ends_in_metrics_and_report(tmp_path):
    """The default target on the tiny dataset: synth -> index -> frames -> flow -> masks
    (trained segmenter) -> both region-model stages -> predictions -> evaluation -> tables ->
    report, at a few training steps per stage."""
    # shard jobs of 3 videos, as a cluster would run them (tests/test_shard_workflow.py
    # checks that they write what one-video jobs write)
    cfg = write_config(tmp_path, **TINY_STAGES, cluster={"videos_per_job": 3})
    proc = snakemake(tmp_path, cfg)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    res = tmp_path / "results"
    html = (res / "report/index.html").read_text()
    assert "SYNTHETIC" in html
    for model in ("baseline_rgb", "baseline_rgbflow", "region_rgb_model", "region_rgbflow_model",
                  "region_rgbflow_gt", "e2e_full"):
        metrics = json.loads((res / f"eval/{model}.json").read_text())
        for setting in ("actor", "action", "joint"):
            assert 0 <= metrics[setting]["glo"] <= 100, (model, setting)
        assert metrics["meta"]["split"] == "test"
    for table in ("dang_table1", "dang_table3", "timing"):
        assert (res / f"tables/{table}.md").is_file(), table
    assert (res / "segmenter/metrics.json").is_file()
    assert (res / "logs/index.log").is_file() and (res / "benchmarks/index.tsv").is_file()
    assert not list(res.rglob("*.tmp.*"))
    # every stage of the region method ran for what it should: features of every video,
    # label maps of every test video at native size with only valid pairs, plus PNGs
    table = read_index(res / "index/frames.csv")
    rm = res / "region_model/rgbflow"
    assert sorted(p.stem for p in (rm / "features").glob("*.h5")) == sorted(table.video.unique())
    assert not list(res.glob("region_model/*/*.resume.pt"))  # resume states go on success
    for video, rows in table[table.split == "test"].groupby("video"):
        for model in ("baseline_rgbflow", "region_rgbflow_model", "e2e_full"):
            with h5py.File(res / f"predictions/{model}/{video}.h5", "r", locking=False) as f:
                labels = f["labels"][:]
                assert f["frame_ids"][:].tolist() == sorted(rows.frame)
            assert labels.shape[1:] == (int(rows.height.iloc[0]), int(rows.width.iloc[0]))
            assert is_valid_label(labels).all() and labels.dtype == np.uint8
            assert len(list((res / f"predictions/{model}/png/{video}").glob("*.png"))) == len(rows)

    # nothing to do on a second run
    proc = snakemake(tmp_path, cfg, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # a config change of one section re-runs that stage and downstream, not the upstream ones
    cfg2 = write_config(tmp_path, **{**TINY_STAGES, "evaluation": {"boundary_width": 9},
                                     "cluster": {"videos_per_job": 3}})
    proc = snakemake(tmp_path, cfg2, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "rule evaluate" in out and "rule report" in out
    for upstream in ("rule synth", "rule frames", "rule flow", "rule train_segmenter",
                     "rule region_stage1"):
        assert upstream not in out, upstream
    # a key of the region back-end re-runs stage 2 and the region predictions only: stage 1,
    # the feature cache and the baseline do not read it (on A2D stage 1 is 20000 steps)
    region = TINY_STAGES["region_model"]
    cfg3 = write_config(tmp_path, **{**TINY_STAGES, "cluster": {"videos_per_job": 3},
                                     "region_model": {**region, "stage2": {
                                         **region["stage2"], "iterations": 3}}})
    proc = snakemake(tmp_path, cfg3, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "rule region_stage2" in out and "rule predict_region" in out
    for upstream in ("rule region_stage1", "rule region_features", "rule predict_baseline",
                     "rule train_segmenter", "rule e2e_train"):
        assert upstream not in out, upstream

    # Snakemake's own report of the run holds the flagged tables, figures, evaluations and page
    import zipfile

    zipped = tmp_path / "report.zip"
    proc = snakemake(tmp_path, cfg, "--report", str(zipped))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    with zipfile.ZipFile(zipped) as z:
        files = {Path(n).name: n for n in z.namelist() if not n.endswith("/")}
        assert "report.html" in files, sorted(files)
        for name in ("index.html", "dang_table1.csv", "dang_table3.csv", "timing.csv",
                     "per_class_joint.png", "confusion_region_rgbflow_model_joint.png",
                     "loss_curves.png", "timing.png", "qualitative.png", "baseline_rgbflow.json",
                     "e2e_full.json", "region_rgbflow_model.per_class.csv"):
            assert name in files, (name, sorted(files))
        assert z.read(files["index.html"]) == (res / "report/index.html").read_bytes()
        assert z.read(files["dang_table1.csv"]) == (res / "tables/dang_table1.csv").read_bytes()
        page = z.read(files["report.html"]).decode()
    # the captions (workflow/report/*.rst) and categories are in the report
    for text in ("Paper tables", "Figures", "Run report", "Evaluation", "video-averaged IoU"):
        assert text in page, text
