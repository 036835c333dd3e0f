"""Smoke test of config/a2d.yaml itself (issue 14): the papers' architectures at A2D's size
train one step in every training stage and predict, offline, through the workflow.

Only the release, iterations, batch sizes and devices differ from config/a2d.yaml
(tests/a2d_smoke_support.py OVERRIDES). Every weights name of the config resolves from a private
torch hub cache holding files the test writes (torchvision's key names, random values); FlowNet2
loads ptlflow's ``things`` checkpoint from the same cache; no process of the run can reach the
network (tests/offline/sitecustomize.py). Two Snakemake runs:

1. the training stages that start from pretrained weights (segmenter, region stage 1 RGB+flow,
   Ji et al.'s full model) and the flow of every video, with the hub cache filled;
2. with the hub cache emptied: region features, masks, region stage 2 and the predictions of
   the baseline, the region model and the Ji model; none of them may need initial weights.

Slow (minutes on a CPU: ResNet-101 at output stride 8 on 320 x 568 frames, FlowNet2).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from a2d_smoke_support import (A2D_WIDTHS, OVERRIDES, RELEASE, a2d_config, offline_env,
                               write_ptlflow_checkpoint, write_torchvision_weights)
from conftest import ROOT
from pipeline.a2d.videoset import read_videoset

BLOCKED = "network access blocked by the A2D smoke test"
TRAINING = ("results/segmenter/model.pt", "results/region_model/rgbflow/stage1.pt",
            "results/e2e/full/model.pt")


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def test_overrides_are_only_iterations_batch_sizes_and_devices():
    assert all(k.rsplit(".", 1)[-1] in ("iterations", "batch_size", "device")
               for k, _ in _leaves(OVERRIDES))


def _snakemake(tmp: Path, cfg_path: Path, env: dict, targets: list[str]):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp), "--configfile", str(cfg_path), "--workflow-profile", "none",
           "--cores", "2", "--scheduler", "greedy", *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # the failing jobs' own words
        logs = [p for p in sorted((tmp / "results/logs").rglob("*.log"))
                if "Error" in p.read_text(errors="replace")]
        tails = "".join(f"\n== {p.relative_to(tmp)}:\n{p.read_text()[-1200:]}" for p in logs)
        pytest.fail(f"snakemake {' '.join(targets)} failed:\n{proc.stderr[-2000:]}{tails}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from pipeline.config import stage_config
    from pipeline.synth import SynthConfig, generate_release

    tmp = tmp_path_factory.mktemp("a2d_smoke")
    release = tmp / "A2D" / "Release"
    generate_release(release, stage_config(SynthConfig, "synthetic", RELEASE))
    cfg = a2d_config(release)
    cfg_path = tmp / "a2d_smoke.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    torch_home = tmp / "torch_home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        weights = write_torchvision_weights(cfg)
        write_ptlflow_checkpoint(cfg)
    return {"tmp": tmp, "cfg": cfg, "cfg_path": cfg_path, "torch_home": torch_home,
            "weights": weights, "env": offline_env(torch_home),
            "videos": read_videoset(release / "videoset.csv")}


@pytest.mark.slow
def test_network_is_blocked_for_the_run(smoke):
    code = "import socket; socket.create_connection(('download.pytorch.org', 443), timeout=5)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=smoke["env"])
    assert proc.returncode != 0 and BLOCKED in proc.stderr


@pytest.mark.slow
def test_release_is_a2d_sized(smoke):
    videos = smoke["videos"]
    assert {v.split for v in videos} == {"train", "test"}
    assert all(v.height == 320 and v.width in A2D_WIDTHS for v in videos)


def _state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["model"], obj.get("meta", {})


def _loaded(state: dict[str, torch.Tensor], prefix: str, source: dict[str, torch.Tensor],
            source_key: str) -> int:
    """How many ResNets under ``prefix`` hold the BatchNorm statistics of their last block
    exactly as ``source`` has them (frozen BatchNorm: loaded, never updated by training)."""
    tail = "layer4.2.bn3.running_mean"
    keys = [k for k in state if k.startswith(prefix) and k.endswith(f".{tail}")]
    assert all(torch.equal(state[k], source[source_key + tail]) for k in keys), keys
    return len(keys)


def _blocks(state: dict[str, torch.Tensor], layer: str) -> int:
    """Residual blocks in every ``layer`` of ``state`` together (23 per ResNet-101)."""
    found = {(k.split(f".{layer}.")[0], k.split(f".{layer}.")[1].split(".")[0])
             for k in state if f".{layer}." in k}
    return len(found)


@pytest.mark.slow
def test_a2d_config_trains_every_stage_and_predicts_offline(smoke):
    tmp, cfg, weights = smoke["tmp"], smoke["cfg"], smoke["weights"]
    test_videos = [v.vid for v in smoke["videos"] if v.test]
    hub = smoke["torch_home"] / "hub"
    hub_files = sorted(hub.rglob("*"))

    # 1. training from the config's pretrained weights, found offline under their names
    flows = [f"results/flow/{v.vid}.h5" for v in smoke["videos"]]
    _snakemake(tmp, smoke["cfg_path"], smoke["env"], [*TRAINING, *flows])
    assert sorted(hub.rglob("*")) == hub_files  # nothing fetched, nothing else looked for

    frozen = {k: torch.load(p, weights_only=True) for k, p in weights.items()}
    rm, seg, e2e = cfg["region_model"], cfg["segmenter"], cfg["e2e_model"]
    # frozen BatchNorm statistics are the file's: the weights were loaded, not left random
    stage1, _ = _state(tmp / TRAINING[1])
    # RGB and flow streams (flow_init: rgb), both from the front-end's file
    assert _loaded(stage1, "frontend.", frozen[rm["frontend"]["pretrained"]], "") == 2
    assert _blocks(stage1, "layer3") == 2 * 23  # two ResNet-101 streams
    segmenter, _ = _state(tmp / TRAINING[0])
    assert _loaded(segmenter, "backbone.body.", frozen[seg["backbone_weights"]], "") == 1
    assert _blocks(segmenter, "layer3") == 23
    model, meta = _state(tmp / TRAINING[2])
    assert meta["init"]["sources"] == {"appearance": e2e["weights"],
                                       "motion": e2e["motion_weights"]}
    assert all(n > 0 for n in meta["init"]["loaded"].values())
    assert len(meta["init"]["loaded"]) == 6  # backbones, FPN, RPN, box and mask heads
    assert _loaded(model, "appearance.body.", frozen[e2e["weights"]], "backbone.body.") == 1
    assert _loaded(model, "motion.body.", frozen[e2e["motion_weights"]], "") == 1
    assert model["appearance.fpn.inner_blocks.0.0.weight"].shape[0] == e2e["fpn_channels"]
    from pipeline.flow.cache import read_flow_cache

    flow = read_flow_cache(tmp / flows[0])
    assert (flow.model, flow.checkpoint) == (cfg["flow"]["model"], cfg["flow"]["checkpoint"])

    # 2. everything after training, with no initial weights anywhere
    shutil.rmtree(hub)
    targets = ["results/region_model/rgbflow/stage2_gt+model.pt"]
    targets += [f"results/predictions/{m}/{v}.h5" for m in
                ("baseline_rgbflow", "region_rgbflow_model", "e2e_full") for v in test_videos]
    out = _snakemake(tmp, smoke["cfg_path"], smoke["env"], targets)
    def ran(rule: str) -> bool:  # per-video stages run as shard rules <rule>_s<hex>
        return re.search(rf"rule {rule}(_s[0-9a-f]{{16}})?:", out) is not None

    for rule in ("train_segmenter", "region_stage1", "e2e_train", "flow"):
        assert not ran(rule), rule
    for rule in ("region_features", "masks", "region_stage2", "predict_baseline",
                 "predict_region", "e2e_predict"):
        assert ran(rule), rule
    from pipeline.region.feature_cache import read_feature_cache

    for v in smoke["videos"]:
        feats = read_feature_cache(tmp / f"results/region_model/rgbflow/features/{v.vid}.h5")
        h, w = rm["input_size"]
        assert feats.shape[1:] == (2 * 2048, -(-h // 8), -(-w // 8))  # 2C, stride 8
    for target in targets[1:]:
        assert (tmp / target).is_file()
