"""`snakemake all_flow` on a tiny synthetic release: the frames and flow rules end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, TINY_SYNTH
from pipeline.flow.cache import read_flow_cache
from pipeline.index import read_index


@pytest.mark.slow
def test_workflow_runs_all_flow(tmp_path):
    """`snakemake all_flow` on a 2-video synthetic release: synth, index, frames, flow."""
    config = {"synthetic": dict(TINY_SYNTH, videos=2), "dataset": {"release":
              "results/synthetic/Release"}, "frames": {"context": 1}, "flow": {"backend": "dis"}}
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg_path),
           "--workflow-profile", "none", "--scheduler", "greedy", "all_flow"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    videos = sorted(read_index(tmp_path / "results/index/frames.csv")["video"].unique())
    assert len(videos) == 2
    for vid in videos:
        cache = read_flow_cache(tmp_path / f"results/flow/{vid}.h5")
        assert len(cache.frame_ids) >= 2 and np.isfinite(cache.flow(cache.frame_ids[0])).all()
        assert (tmp_path / f"results/logs/flow/{vid}.log").is_file()
        assert (tmp_path / f"results/benchmarks/frames/{vid}.tsv").is_file()
    # a flow config change re-runs flow only, and ptlflow on auto device requests a GPU
    config["flow"] = {"backend": "ptlflow", "checkpoint": "weights/flownets.ckpt"}
    cfg_path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(cmd + ["-n"], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rule flow:" in out and "rule frames:" not in out
    assert "gpu=1" in out
