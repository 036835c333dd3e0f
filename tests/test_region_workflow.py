"""The region-model rules on the tiny synthetic dataset: train both stages and predict (one run)."""

from __future__ import annotations

import h5py
import pytest
import numpy as np

from pipeline.a2d.classes import is_valid_label
from pipeline.index import read_index
from test_workflow import snakemake, write_config

# Small enough for a CPU test run: 2 steps per stage, 32 x 48 inputs, GT masks only (the
# `model` masks would first train Mask R-CNN, which the masks tests cover).
TINY_REGION = {
    "input_size": [32, 48], "device": "cpu",
    "frontend": {"depth": 18, "reduce_to": 8},
    "region_head": {"hidden_dim": 16, "pool_size": 3},
    "stage1": {"iterations": 2, "batch_size": 2, "checkpoint_every": 1},
    "stage2": {"iterations": 2, "batch_size": 2, "checkpoint_every": 1, "train_sources": ["gt"]},
}


@pytest.mark.slow
def test_region_rules_train_and_predict(tmp_path):
    cfg = write_config(tmp_path, region_model=TINY_REGION)
    proc = snakemake(tmp_path, cfg, "results/index/frames.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = read_index(tmp_path / "results/index/frames.csv")
    test_videos = sorted(table[table.split == "test"].video.unique())
    targets = [f"results/predictions/{m}/{v}.h5" for m in ("baseline_rgb", "region_rgb_gt")
               for v in test_videos]
    proc = snakemake(tmp_path, cfg, *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rm = tmp_path / "results/region_model/rgb"
    for name in ("stage1.pt", "stage1_loss.csv", "stage1_loss.png", "stage2_gt.pt",
                 "stage2_gt_loss.csv", "stage2_gt_loss.png"):
        assert (rm / name).is_file(), name
    assert not list(rm.glob("*.resume.pt"))  # resume states are removed on success
    # features of every video (train and test), predictions of every test video
    assert sorted(p.stem for p in (rm / "features").glob("*.h5")) == sorted(table.video.unique())
    for target, video in zip(targets, test_videos * 2):
        rows = table[table.video == video]
        with h5py.File(tmp_path / target, "r", locking=False) as f:
            labels = f["labels"][:]
            assert f["frame_ids"][:].tolist() == sorted(rows.frame)
        assert labels.shape[1:] == (int(rows.height.iloc[0]), int(rows.width.iloc[0]))
        assert is_valid_label(labels).all() and labels.dtype == np.uint8
        png_dir = (tmp_path / target).parent / "png" / video
        assert len(list(png_dir.glob("*.png"))) == len(rows)
    for rule in ("region_stage1", "region_stage2"):
        assert list((tmp_path / "results/benchmarks" / rule).glob("*.tsv")), rule
    proc = snakemake(tmp_path, cfg, "-n", *targets)
    assert "Nothing to be done" in proc.stdout + proc.stderr
