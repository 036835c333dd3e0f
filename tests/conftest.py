"""Shared fixtures. The synthetic generator feeds both unit tests and the workflow tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Workflow rules call `python -m pipeline.<stage>`: make that the interpreter running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

#: A tiny synthetic dataset: seconds to generate, enough for every stage to run.
TINY_SYNTH = {
    "enabled": True, "videos": 6, "seed": 3, "height": 48, "widths": [64, 72], "frames": [12, 14],
    "annotated": 2, "test_fraction": 0.34, "fps": 24,
}


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> Path:
    """A synthetic A2D ``Release/`` folder (6 videos, 48 px high), generated once per session."""
    from pipeline.config import stage_config
    from pipeline.synth import SynthConfig, generate_release

    out = tmp_path_factory.mktemp("a2d") / "Release"
    generate_release(out, stage_config(SynthConfig, "synthetic", TINY_SYNTH))
    return out


#: Every trained stage at a few steps and tiny sizes: the whole DAG runs in minutes on a CPU.
TINY_STAGES = {
    "segmenter": {"device": "cpu", "min_size": 40, "max_size": 64, "iterations": 2,
                  "batch_size": 2, "rois_per_image": 16, "mask_head_channels": 16,
                  "checkpoint_every": 1, "warmup_iterations": 1},
    "region_model": {
        "input_size": [32, 48], "device": "cpu",
        "frontend": {"depth": 18, "reduce_to": 8},
        "region_head": {"hidden_dim": 16, "pool_size": 3},
        "stage1": {"iterations": 2, "batch_size": 2, "checkpoint_every": 1},
        "stage2": {"iterations": 2, "batch_size": 2, "checkpoint_every": 1},
    },
    "e2e_model": {
        "depth": 18, "fpn_channels": 16, "anchor_sizes": [8, 16, 32, 64, 128], "min_size": 48,
        "max_size": 96, "representation_size": 32, "rpn_pre_nms_top_n": [200, 100],
        "rpn_post_nms_top_n": [100, 50], "rpn_batch_size_per_image": 32,
        "box_batch_size_per_image": 16, "box_detections_per_img": 10, "iterations": 2,
        "batch_size": 2, "checkpoint_every": 1, "device": "cpu",
    },
}


def pytest_collection_modifyitems(config, items):
    """Slow (whole-workflow) tests first: on pytest-xdist workers they then run side by side
    from the start, and the short tests fill in around them (stable order within each group)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
