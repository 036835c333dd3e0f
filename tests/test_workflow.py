"""The Snakemake workflow on the tiny synthetic dataset: dry run, real run, rerun triggers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_SYNTH


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


def test_run_and_rerun_triggers(tmp_path):
    cfg = write_config(tmp_path)
    proc = snakemake(tmp_path, cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = tmp_path / "results/index/frames.csv"
    assert index.is_file()
    assert (tmp_path / "results/logs/index.log").is_file()
    assert (tmp_path / "results/benchmarks/index.tsv").is_file()
    # nothing to do on a second run
    proc = snakemake(tmp_path, cfg, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # a config change of one section re-runs that stage (and downstream), not the dataset
    cfg2 = write_config(tmp_path, dataset={"max_videos": 4})
    proc = snakemake(tmp_path, cfg2, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "index" in out and "rule synth" not in out
