"""`snakemake all_masks` on a tiny synthetic release (source gt), and the DAG of the other
sources (dry run)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, TINY_SYNTH
from pipeline.a2d.annotations import read_annotation
from pipeline.index import read_index
from pipeline.masks.cache import read_masks_cache


@pytest.mark.slow
def test_workflow_runs_all_masks_with_gt(tmp_path):
    config = {"synthetic": dict(TINY_SYNTH, videos=3),
              "dataset": {"release": "results/synthetic/Release"}, "masks": {"source": "gt"}}
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg_path),
           "--workflow-profile", "none", "all_masks"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    table = read_index(tmp_path / "results/index/frames.csv")
    release = tmp_path / "results/synthetic/Release"
    for video in table.video.unique():
        regions = read_masks_cache(tmp_path / f"results/masks/gt/{video}.h5")
        rows = table[table.video == video]
        assert sorted(regions) == sorted(rows.frame.tolist())
        for r in rows.itertuples():
            np.testing.assert_array_equal(regions[int(r.frame)].binary(),
                                          read_annotation(release / r.mat).masks)
        assert (tmp_path / f"results/logs/masks/gt/{video}.log").is_file()
    assert not (tmp_path / "results/segmenter").exists()  # gt needs no segmenter

    # source model: the segmenter is trained once, on the frames of every video
    config["masks"]["source"] = "model"
    cfg_path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(cmd + ["-n"], capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "train_segmenter" in proc.stdout and "gpu=1" in proc.stdout  # device auto
    assert proc.stdout.count("rule masks:") == len(table.video.unique())

    # source checkpoint without a weights file: a clear error
    config["masks"]["source"] = "checkpoint"
    cfg_path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(cmd + ["-n"], capture_output=True, text=True)
    assert proc.returncode != 0 and "segmenter.checkpoint" in proc.stdout + proc.stderr
