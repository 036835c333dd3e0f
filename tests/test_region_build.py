"""pipeline.region.build checkpoints: loading a trained checkpoint never needs the hub."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torchvision

from pipeline.config import stage_config
from pipeline.errors import DataError
from pipeline.region.build import (
    build_stage1_model,
    build_stage2_model,
    load_checkpoint,
    save_checkpoint,
)
from pipeline.region.config import RegionConfig


CALLS: list = []


def _hub_forbidden(*args, **kwargs):
    CALLS.append(args)
    raise OSError("a stage that loads a trained checkpoint reached for the torch hub")


@pytest.mark.parametrize("streams", ["rgb", "rgbflow"])
def test_stage1_checkpoint_builds_without_the_hub(tmp_path, monkeypatch, streams):
    cfg = stage_config(RegionConfig, "region_model",
                       {"frontend": {"depth": 18, "reduce_to": 8,
                                     "pretrained": "ResNet18_Weights.IMAGENET1K_V1"}})
    # the trained model (its ImageNet init is irrelevant here: built without it)
    trained_cfg = dataclasses.replace(
        cfg, frontend=dataclasses.replace(cfg.frontend, pretrained=None))
    torch.manual_seed(0)
    trained = build_stage1_model(trained_cfg, streams)
    path = tmp_path / "stage1.pt"
    save_checkpoint(path, trained, cfg, stage="stage1", streams=streams, steps=1)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _hub_forbidden)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _hub_forbidden)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", _hub_forbidden)
    CALLS.clear()
    state, meta, loaded_cfg = load_checkpoint(path, "stage1")
    model = build_stage1_model(loaded_cfg, meta["streams"])
    model.load_state_dict(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.state_dict().items())
    # the training-time setting stays in the provenance
    assert json.loads(meta["config_json"])["frontend"]["pretrained"] == \
        "ResNet18_Weights.IMAGENET1K_V1"
    assert loaded_cfg.frontend.pretrained is None and not CALLS
    # building from the training config would have needed the hub
    with pytest.raises(DataError, match="cannot download"):
        build_stage1_model(cfg, streams)
    assert CALLS


def test_wrong_stage_and_foreign_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not a stage1 checkpoint of this pipeline"):
        load_checkpoint(path, "stage1")
    torch.save({"model": {"w": torch.zeros(1)}, "meta": {"stage": "stage2", "config_json": "{}"}},
               path)
    with pytest.raises(ValueError, match="expected a 'stage1' checkpoint, found 'stage2'"):
        load_checkpoint(path, "stage1")


@pytest.mark.parametrize("binarize", [None, 0.5])
def test_stage2_checkpoint_keeps_the_mask_binarization(tmp_path, binarize):
    cfg = stage_config(RegionConfig, "region_model",
                       {"region_head": {"pool_size": 3, "hidden_dim": 16,
                                        "binarize_masks": binarize}})
    model = build_stage2_model(cfg, 12)
    assert model.actor_head.binarize == binarize and model.action_head.binarize == binarize
    path = tmp_path / "stage2.pt"
    save_checkpoint(path, model, cfg, stage="stage2", streams="rgbflow", in_channels=12)
    _, _, loaded = load_checkpoint(path, "stage2")
    assert build_stage2_model(loaded, 12).actor_head.binarize == binarize
    # A checkpoint written before the key existed keeps the probabilities it was trained with.
    obj = torch.load(path, weights_only=True)
    old = json.loads(obj["meta"]["config_json"])
    del old["region_head"]["binarize_masks"]
    obj["meta"]["config_json"] = json.dumps(old)
    torch.save(obj, path)
    assert load_checkpoint(path, "stage2")[2].region_head.binarize_masks is None
