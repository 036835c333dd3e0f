"""Upstream caches and a tiny config for the end-to-end model's stage tests.

Index, frames (context 1, for 3-frame clips) and flow (DIS ultrafast) caches come from the real
stage CLIs (``pipeline.index`` / ``pipeline.frames`` / ``pipeline.flow`` ``main()``), built once
per test session under pytest's base temp folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import stage_config
from pipeline.e2e.config import E2EConfig
from pipeline.flow.__main__ import main as flow_main
from pipeline.frames import main as frames_main
from pipeline.index import main as index_main
from pipeline.index import read_index

#: A tiny, fast model (random init, BatchNorm) for 48 px frames.
TINY_E2E = {
    "depth": 18, "fpn_channels": 16, "anchor_sizes": [8, 16, 32, 64, 128], "min_size": 48,
    "max_size": 96, "representation_size": 32, "rpn_pre_nms_top_n": [200, 100],
    "rpn_post_nms_top_n": [100, 50], "rpn_batch_size_per_image": 32,
    "box_batch_size_per_image": 16, "box_detections_per_img": 10, "iterations": 4,
    "batch_size": 2, "lr": 0.01, "checkpoint_every": 2, "device": "cpu", "seed": 0,
}


def tiny_cfg(**overrides) -> E2EConfig:
    return stage_config(E2EConfig, "e2e_model", {**TINY_E2E, **overrides})


def build_caches(release: Path, root: Path) -> dict[str, Path]:
    """Index, frames and flow caches of every video of ``release`` under ``root``."""
    paths = {"release": release, "index": root / "index.csv", "frames": root / "frames",
             "flow": root / "flow"}
    if (root / "done").exists():
        return paths
    assert index_main(["--release", str(release), "--out", str(paths["index"])]) == 0
    frames_cfg = json.dumps({"context": 1})
    flow_cfg = json.dumps({"backend": "dis", "dis_preset": "ultrafast"})
    for video in sorted(read_index(paths["index"]).video.unique()):
        frames = paths["frames"] / f"{video}.h5"
        assert frames_main(["--release", str(release), "--index", str(paths["index"]),
                            f"--video={video}", "--out", str(frames),
                            "--config-json", frames_cfg]) == 0
        assert flow_main(["--frames", str(frames), "--out", str(paths["flow"] / f"{video}.h5"),
                          "--threads", "1", "--config-json", flow_cfg]) == 0
    (root / "done").touch()
    return paths
