"""pipeline.checkpoint: the one weights reader, name resolution, and every entry point using it."""

from __future__ import annotations

import builtins
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pipeline import checkpoint
from pipeline.errors import DataError


class WritesAFile:
    """A pickle payload that would create ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _malicious(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}, "meta": WritesAFile(marker)}, path)


def _truncated(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1000)}, "meta": {}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _text(path: Path, marker: Path) -> None:
    path.write_text("These are not weights.\nSee README.\n")


BAD_FILES = {"malicious pickle": _malicious, "truncated": _truncated, "text file": _text}


def _frontend(path):
    from pipeline.models.frontend import build_frontend
    build_frontend(18, two_stream=False, weights=path)


def _segmenter_checkpoint(path):
    from pipeline.masks.weights import load_segmenter
    load_segmenter(path)


def _segmenter_weights(path):
    from pipeline.masks.weights import resolve_weights
    resolve_weights(str(path))


def _region(stage):
    def load(path):
        from pipeline.region.build import load_checkpoint
        load_checkpoint(path, stage)
    return load


def _e2e_weights(path):
    from pipeline.e2e.pretrained import initialise
    initialise(nn.Module(), str(path), None, 18)


def _e2e_motion_weights(path):
    from pipeline.e2e.pretrained import initialise
    model = nn.Module()
    model.motion = nn.Identity()
    initialise(model, None, str(path), 18)


def _e2e_checkpoint(path):
    from pipeline.e2e.config import load_checkpoint
    load_checkpoint(path)


def _ptlflow(path):
    pytest.importorskip("ptlflow")
    from pipeline.flow.ptlflow_backend import PtlflowFlow
    PtlflowFlow("flownets", str(path), device="cpu")


def _resume_state(path):
    checkpoint.read(path, "resume state")


ENTRY_POINTS = {
    "frontend pretrained": _frontend, "segmenter checkpoint": _segmenter_checkpoint,
    "segmenter weights": _segmenter_weights, "region stage1": _region("stage1"),
    "region stage2": _region("stage2"), "e2e weights": _e2e_weights,
    "e2e motion_weights": _e2e_motion_weights, "e2e checkpoint": _e2e_checkpoint,
    "ptlflow checkpoint": _ptlflow, "resume state": _resume_state,
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_refuses_bad_files_in_one_line(tmp_path, monkeypatch, entry, bad):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "payload_ran.txt"
    path = tmp_path / "weights.ckpt"
    BAD_FILES[bad](path, marker)
    with pytest.raises(DataError) as err:
        ENTRY_POINTS[entry](path)
    message = str(err.value)
    assert not marker.exists()  # the payload never ran
    assert err.value.path == str(path) and message.startswith(str(path))
    assert "\n" not in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "torch.save(model.state_dict(), path)" in message  # what to do
    if bad == "malicious pickle":
        assert "refused" in message and "open" in message


def test_read_round_trip_and_state_dict_layouts(tmp_path):
    state = {"a.weight": torch.arange(3.0), "b": torch.ones(2, 2)}
    for i, obj in enumerate([state, {"model": state, "meta": {"x": 1}}, {"state_dict": state}]):
        path = tmp_path / f"w{i}.pt"
        torch.save(obj, path)
        got = checkpoint.read_state_dict(path)
        assert set(got) == set(state)
        assert all(torch.equal(got[k], state[k]) for k in state)


@pytest.mark.parametrize("obj, match", [
    ([1, 2], "no state dict found.*list"),
    ({"epoch": 3}, "no state dict found.*epoch"),
    ({}, "no state dict found"),
])
def test_files_without_a_state_dict(tmp_path, obj, match):
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    with pytest.raises(DataError, match=match):
        checkpoint.read_state_dict(path)


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(DataError, match="resume state not found"):
        checkpoint.read(tmp_path / "nope.pt", "resume state")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        checkpoint.read(tmp_path / "empty.pt")
    with pytest.raises(DataError, match="directory"):
        checkpoint.read(tmp_path)


def test_load_state_reports_keys_and_shapes_in_one_line(tmp_path):
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    good = module.state_dict()
    bad = {**good, "0.weight": torch.zeros(5, 3), "extra": torch.zeros(1)}
    del bad["1.bias"]
    with pytest.raises(DataError) as err:
        checkpoint.load_state(module, bad, tmp_path / "w.pt")
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing ['1.bias']" in msg and "unexpected ['extra']" in msg
    assert "0.weight (5, 3) vs (4, 3)" in msg
    # num_batches_tracked may be absent (FrozenBatchNorm2d files); ignored prefixes too
    ok = {k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}
    checkpoint.load_state(module, {**ok, "fc.weight": torch.zeros(1)}, "x",
                          ignore_prefixes=("fc.",))


@pytest.mark.parametrize("spec, enum, expected", [
    ("ResNet101_Weights.IMAGENET1K_V1", None, "ResNet101_Weights.IMAGENET1K_V1"),
    ("ResNet101_Weights.IMAGENET1K_V1", "resnet101", "ResNet101_Weights.IMAGENET1K_V1"),
    ("IMAGENET1K_V2", "resnet101", "ResNet101_Weights.IMAGENET1K_V2"),
    ("DEFAULT", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    ("MaskRCNN_ResNet50_FPN_Weights.COCO_V1", None, "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"),
    ("ResNet50_Weights.DEFAULT", None, "ResNet50_Weights.IMAGENET1K_V2"),
])
def test_torchvision_names_in_every_spelling(spec, enum, expected):
    weights_enum = torchvision.models.get_model_weights(enum) if enum else None
    w = checkpoint.torchvision_weight(spec, weights_enum)
    assert f"{type(w).__name__}.{w.name}" == expected


@pytest.mark.parametrize("spec, enum, listed", [
    ("IMAGENET9K_V7", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    ("ResNet50_Weights.IMAGENET1K_V1", "resnet101", "ResNet101_Weights.IMAGENET1K_V2"),
    ("ResNet101_Weights.IMAGENET9K", None, "ResNet101_Weights.IMAGENET1K_V1"),
    ("ResNet102_Weights.IMAGENET1K_V1", None, "ResNet101_Weights"),
])
def test_wrong_names_list_valid_ones(spec, enum, listed):
    weights_enum = torchvision.models.get_model_weights(enum) if enum else None
    with pytest.raises(DataError) as err:
        checkpoint.torchvision_weight(spec, weights_enum)
    assert str(err.value).startswith(spec) and listed in str(err.value)
    assert "\n" not in str(err.value)


def test_names_and_paths_are_told_apart(tmp_path):
    assert checkpoint.is_weights_name("ResNet18_Weights.IMAGENET1K_V1")
    assert checkpoint.is_weights_name("IMAGENET1K_V1")
    for spec in ("model.pt", "results/segmenter/model.pt", "weights.pth", str(tmp_path)):
        assert not checkpoint.is_weights_name(spec)


@pytest.fixture()
def no_network(monkeypatch, tmp_path):
    """An empty hub cache and no network: any download attempt fails like it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    return calls


def test_name_is_read_from_the_hub_cache_without_network(no_network):
    w = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    state = torchvision.models.resnet18(weights=None).state_dict()
    cached = checkpoint.hub_cache_path(w)
    assert cached.parent == Path(torch.hub.get_dir()) / "checkpoints"
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    got, label = checkpoint.resolve("ResNet18_Weights.IMAGENET1K_V1")
    assert label == "ResNet18_Weights.IMAGENET1K_V1" and not no_network
    assert torch.equal(got["conv1.weight"], state["conv1.weight"])


def test_offline_download_is_one_clear_line(no_network):
    with pytest.raises(DataError) as err:
        checkpoint.resolve("ResNet18_Weights.IMAGENET1K_V1")
    msg = str(err.value)
    assert msg.startswith("ResNet18_Weights.IMAGENET1K_V1: cannot download")
    assert "resnet18-f37072fd.pth" in msg and "local file" in msg and "\n" not in msg
    assert no_network  # it did try
