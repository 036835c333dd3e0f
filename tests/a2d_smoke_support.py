"""Inputs of the A2D smoke test (tests/test_a2d_smoke.py), all written offline by the test:

- a release in A2D's format at A2D's size (clips 320 px high, 426 / 568 wide), by the synthetic
  generator;
- config/a2d.yaml with only the release, iterations, batch sizes and devices overridden;
- for every weights setting of config/a2d.yaml, a random file with the key names and layout of
  the file torchvision would download, in a private torch hub cache under the file name of its
  URL; FlowNet2's ptlflow checkpoint the same way; so the names in the config resolve offline;
- an environment whose Python processes cannot reach the network (tests/offline/sitecustomize.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torchvision
import yaml

from conftest import ROOT

A2D = ROOT / "config/a2d.yaml"
OFFLINE_SITE = Path(__file__).resolve().parent / "offline"

#: Two videos (one train, one test) at A2D's clip height and two of its widths, one annotated
#: frame each, in the middle of 3-frame clips: the +-2 context frames of config/a2d.yaml are
#: clipped to +-1 (as at any clip's ends), which is Ji's 3-frame window and 3 FlowNet2 pairs a
#: video instead of 5 (FlowNet2 is ~40% of the test's CPU time).
RELEASE = {"enabled": True, "videos": 2, "seed": 5, "height": 320, "widths": [426, 568],
           "frames": [3, 3], "annotated": 1, "test_fraction": 0.5, "fps": 24}
A2D_WIDTHS = {426, 480, 568}

#: The only values the smoke test changes in config/a2d.yaml, besides dataset.release.
OVERRIDES: dict[str, dict[str, Any]] = {
    "flow": {"device": "cpu", "batch_size": 1},  # FlowNet2 at batch 2 peaks at 9.4 GB
    "masks": {"batch_size": 1},
    "segmenter": {"device": "cpu", "iterations": 1, "batch_size": 1},
    "region_model": {"device": "cpu", "stage1": {"iterations": 1, "batch_size": 1},
                     "stage2": {"iterations": 1, "batch_size": 1}},
    "e2e_model": {"device": "cpu", "iterations": 1, "batch_size": 1},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return out


def a2d_config(release: Path) -> dict[str, Any]:
    """config/a2d.yaml with :data:`OVERRIDES` and the release path."""
    cfg = yaml.safe_load(A2D.read_text())
    return _merge(cfg, {**OVERRIDES, "dataset": {"release": str(release)}})


def weights_settings(cfg: dict[str, Any]) -> dict[str, str]:
    """Every non-null weights setting of the config: dotted key -> value."""
    rm, seg, e2e = cfg["region_model"], cfg["segmenter"], cfg["e2e_model"]
    found = {"region_model.frontend.pretrained": rm["frontend"]["pretrained"],
             "segmenter.weights": seg["weights"],
             "segmenter.backbone_weights": seg["backbone_weights"],
             "e2e_model.weights": e2e["weights"],
             "e2e_model.motion_weights": e2e.get("motion_weights")}  # absent before issue 14
    return {k: v for k, v in found.items() if v}


# -- torchvision-format weight files ----------------------------------------------------------
def _maskrcnn(builder):
    def build(weights):
        return builder(weights=None, weights_backbone=None,
                       num_classes=len(weights.meta["categories"]))
    return build


#: weights enum -> a randomly initialised model of the architecture the released file is for.
_BUILDERS = {
    "ResNet50_Weights": lambda w: torchvision.models.resnet50(),
    "ResNet101_Weights": lambda w: torchvision.models.resnet101(),
    "MaskRCNN_ResNet50_FPN_Weights": _maskrcnn(torchvision.models.detection.maskrcnn_resnet50_fpn),
}

# torchvision's released COCO detection files predate its state-dict version 2 (it renames these
# keys on load): write them as released, not as today's modules name them.
_RELEASED_NAMES = ((re.compile(r"^rpn\.head\.conv\.0\.0\.(weight|bias)$"), r"rpn.head.conv.\1"),
                   (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.(weight|bias)$"),
                    r"\1.\2"))
_RELEASED_MASK = re.compile(r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$")


def _released_name(key: str) -> str:
    for pattern, repl in _RELEASED_NAMES:
        key = pattern.sub(repl, key)
    found = _RELEASED_MASK.match(key)
    if found:
        key = f"roi_heads.mask_head.mask_fcn{int(found.group(1)) + 1}.{found.group(2)}"
    return key


def released_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """``model``'s state dict as torchvision's released files hold it: no BatchNorm
    ``num_batches_tracked`` counters, detection keys in their released names, and BatchNorm
    statistics made random (a fresh model has mean 0, var 1: then "the statistics were loaded"
    could not be told from "left at their init").

    The last BatchNorm scale of each bottleneck (``bn3.weight``) is small, as in trained ResNets:
    with random weights at scale 1 the 33 residual blocks of a ResNet-101 grow activations to
    ~1e6 (float16 feature caches overflow, losses reach 1e7); at <= 0.2 they stay ~1."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_mean"):
            value = torch.randn(value.shape, generator=gen) * 0.1
        elif key.endswith("running_var"):
            value = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith("bn3.weight"):
            value = torch.rand(value.shape, generator=gen) * 0.2
        out[_released_name(key)] = value
    return out


def write_torchvision_weights(cfg: dict[str, Any]) -> dict[str, Path]:
    """Write the file of every torchvision weights name in ``cfg`` where torch's hub cache
    (``$TORCH_HOME``, set by the caller) looks for it; returns name -> path. (torch's own
    rule, not the pipeline's: the test checks the pipeline against it.)"""
    written = {}
    for i, (key, name) in enumerate(sorted(weights_settings(cfg).items())):
        weights = torchvision.models.get_weight(name)
        enum = type(weights).__name__
        if enum not in _BUILDERS:
            raise AssertionError(f"{key}: {name}: the smoke test cannot write a {enum} file yet")
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(released_state(_BUILDERS[enum](weights), seed=i), path)
        written[name] = path
    return written


def write_ptlflow_checkpoint(cfg: dict[str, Any]) -> Path:
    """A random checkpoint of ``flow.model`` in the Lightning layout ptlflow loads
    (``{"state_dict": ...}``), in the hub cache under the file name of the URL of
    ``flow.checkpoint`` (e.g. ``things``)."""
    import ptlflow

    flow = cfg["flow"]
    url = ptlflow.get_model_reference(flow["model"]).pretrained_checkpoints[flow["checkpoint"]]
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    net = ptlflow.get_model(flow["model"])
    torch.save({"state_dict": net.state_dict(), "pytorch-lightning_version": "2.0.0"}, path)
    return path


def offline_env(torch_home: Path) -> dict[str, str]:
    """The environment of the smoke run: a private hub cache, no network."""
    env = dict(os.environ)
    env["TORCH_HOME"] = str(torch_home)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(OFFLINE_SITE), *filter(None, [env.get("PYTHONPATH")])])
    return env
