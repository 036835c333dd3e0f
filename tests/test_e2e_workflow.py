"""`snakemake e2e_full` on a tiny synthetic release: frames, flow, training, predictions,
segmentation and detection evaluation of the end-to-end model, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, TINY_SYNTH
from e2e_support import TINY_E2E
from pipeline.index import read_index


@pytest.mark.slow
def test_workflow_runs_e2e_full_and_tables(tmp_path):
    config = {"synthetic": dict(TINY_SYNTH, videos=3), "dataset": {"release":
              "results/synthetic/Release"}, "frames": {"context": 1},
              "flow": {"backend": "dis", "dis_preset": "ultrafast"},
              "e2e_model": dict(TINY_E2E, iterations=3, checkpoint_every=2)}
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg_path),
           "--workflow-profile", "none", "--scheduler", "greedy"]
    proc = subprocess.run(cmd + ["e2e_full", "ji_table1", "ji_table2"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    res = tmp_path / "results"
    table = read_index(res / "index/frames.csv")
    test_videos = sorted(table[table.split == "test"].video.unique())
    assert test_videos
    for v in test_videos:
        assert (res / f"predictions/e2e_full/{v}.h5").is_file()
        assert (res / f"predictions/e2e_full/detections/{v}.h5").is_file()
        assert any((res / f"predictions/e2e_full/png/{v}").iterdir())
    seg = json.loads((res / "eval/e2e_full.json").read_text())
    det = json.loads((res / "eval/e2e_full.detection.json").read_text())
    assert seg["meta"]["split"] == det["meta"]["split"] == "test"
    assert {"actor", "action", "joint"} <= set(seg) and {"actor", "action", "joint"} <= set(det)
    assert [p["variant"] for p in det["meta"]["predictions_provenance"]] == ["full"]
    for path in ("e2e/full/model.pt", "e2e/full/loss.csv", "e2e/full/loss.png",
                 "tables/ji_table1.md", "tables/ji_table2.md",
                 "logs/e2e_train/full.log", "benchmarks/e2e_train/full.tsv"):
        assert (res / path).is_file(), path
    assert "SYNTHETIC" in (res / "tables/ji_table1.md").read_text()

    # a threshold change re-runs predictions (not training); the ablation table and the
    # zero-shot runs are wired (dry run: 5 more variants, 7 zero-shot trainings)
    config["e2e_model"]["score_thresh"] = 0.3
    cfg_path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(cmd + ["-n", "e2e_full"], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rule e2e_predict:" in out and "rule e2e_train:" not in out
    proc = subprocess.run(cmd + ["-n", "ji_table3", "ji_zero_shot"], capture_output=True,
                          text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for variant in ("maskrcnn_pairs", "no_mask", "no_temporal", "no_flow", "joint_off"):
        assert f"variant={variant}" in out, variant
    assert out.count("rule e2e_train_zero_shot:") == 7
