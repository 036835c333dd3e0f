"""Region-model training: one step per stage, overfitting, resume after a kill, NaN guard."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pipeline.config import stage_config
from pipeline.provenance import config_json
from pipeline.region.build import load_checkpoint
from pipeline.region.config import RegionConfig
from pipeline.region.data import RegionFrames
from pipeline.region.features import extract_features
from pipeline.region.train_baseline import side_paths, train_stage1
from pipeline.region.train_region import parse_sources, train_stage2
from pipeline.training.curves import loss_decreased
from pipeline.training.engine import NonFiniteLoss
from region_support import build_caches

SIZE = [37, 51]  # odd on purpose


def tiny_cfg(**over) -> RegionConfig:
    base = {"input_size": SIZE, "device": "cpu", "seed": 1,
            "frontend": {"depth": 18, "reduce_to": 16},
            "region_head": {"hidden_dim": 32, "pool_size": 3},
            "stage1": {"iterations": 2, "batch_size": 2, "checkpoint_every": 2,
                       "lr_policy": "constant"},
            "stage2": {"iterations": 2, "batch_size": 2, "checkpoint_every": 2,
                       "lr_policy": "constant"}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return stage_config(RegionConfig, "region_model", base)


@pytest.fixture(scope="module")
def caches(tiny_release, tmp_path_factory):
    return build_caches(tiny_release, tmp_path_factory.mktemp("region_caches"))


def stage1(cfg, caches, out, streams="rgbflow", on_step=None):
    return train_stage1(cfg, release=caches["release"], index=caches["index"],
                        frames_dir=caches["frames"], flow_dir=caches["flow"], streams=streams,
                        out=out, on_step=on_step)


@pytest.fixture(scope="module")
def features(caches, tmp_path_factory):
    """A 2-step stage-1 front-end and the feature caches of every video."""
    root = tmp_path_factory.mktemp("features")
    stage1(tiny_cfg(), caches, root / "stage1.pt")
    import pandas as pd
    for video in sorted(pd.read_csv(caches["index"], dtype={"video": str}).video.unique()):
        extract_features(index=caches["index"], video=video, frames_dir=caches["frames"],
                         flow_dir=caches["flow"], streams="rgbflow", stage1=root / "stage1.pt",
                         out=root / "features" / f"{video}.h5", device_name="cpu")
    return root


def stage2(cfg, caches, features, out, on_step=None, sources=("gt", "model")):
    return train_stage2(cfg, release=caches["release"], index=caches["index"],
                        features_dir=features / "features", masks_root=caches["masks"], out=out,
                        train_sources=sources, on_step=on_step)


@pytest.mark.parametrize("streams", ["rgb", "rgbflow"])
def test_stage1_one_step_writes_checkpoint_and_curves(caches, tmp_path, streams):
    out = tmp_path / "stage1.pt"
    history = stage1(tiny_cfg(stage1={"iterations": 1}), caches, out, streams)
    assert history["step"] == [1] and torch.isfinite(torch.tensor(history["loss"])).all()
    state, meta, cfg = load_checkpoint(out, "stage1")
    assert meta["streams"] == streams and meta["steps"] == 1 and list(cfg.input_size) == SIZE
    assert ("frontend.flow_stream.stem.0.weight" in state) == (streams == "rgbflow")
    paths = side_paths(out)
    assert paths["csv"].read_text().splitlines()[0].startswith("step,loss,loss_actor,loss_action")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not paths["resume"].exists()  # removed once the final weights are written


def test_stage2_one_step(caches, features, tmp_path):
    out = tmp_path / "stage2.pt"
    history = stage2(tiny_cfg(stage2={"iterations": 1}), caches, features, out)
    assert history["step"] == [1]
    _, meta, _ = load_checkpoint(out, "stage2")
    assert meta["train_sources"] == "gt+model" and meta["streams"] == "rgbflow"


def test_stage1_overfits_a_few_frames(caches, tmp_path):
    cfg = tiny_cfg(stage1={"iterations": 30, "batch_size": 4, "checkpoint_every": 100,
                           "lr_frontend": 0.01, "lr_backend": 0.01})
    history = stage1(cfg, caches, tmp_path / "s1.pt", streams="rgb")
    assert loss_decreased(history) < 0.6, history["loss"]
    assert min(history["loss"][-5:]) < 0.5 * history["loss"][0], history["loss"]


def test_stage2_overfits_a_few_frames(caches, features, tmp_path):
    cfg = tiny_cfg(stage2={"iterations": 40, "batch_size": 4, "checkpoint_every": 100,
                           "lr": 0.02})
    history = stage2(cfg, caches, features, tmp_path / "s2.pt")
    assert loss_decreased(history) < 0.6, history["loss"]


class Killed(Exception):
    pass


def kill_at(step):
    def on_step(s, terms):
        if s == step:
            raise Killed
    return on_step


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stage1_resume_after_kill_gives_identical_weights(caches, tmp_path):
    cfg = tiny_cfg(stage1={"iterations": 4, "checkpoint_every": 2, "lr_policy": "poly"})
    stage1(cfg, caches, tmp_path / "a" / "stage1.pt", streams="rgb")
    killed = tmp_path / "b" / "stage1.pt"
    with pytest.raises(Killed):
        stage1(cfg, caches, killed, streams="rgb", on_step=kill_at(3))  # resume state: step 2
    assert side_paths(killed)["resume"].is_file() and not killed.exists()
    history = stage1(cfg, caches, killed, streams="rgb")
    assert history["step"] == list(range(1, 5))
    assert_same_state(load_checkpoint(tmp_path / "a" / "stage1.pt", "stage1")[0],
                      load_checkpoint(killed, "stage1")[0])


def test_stage2_resume_after_kill_gives_identical_weights_with_dropout(caches, features, tmp_path):
    # dropout draws from the global RNG: the resume state must restore it
    cfg = tiny_cfg(region_head={"dropout": 0.5},
                   stage2={"iterations": 6, "checkpoint_every": 2, "lr_policy": "poly"})
    stage2(cfg, caches, features, tmp_path / "a.pt")
    with pytest.raises(Killed):
        stage2(cfg, caches, features, tmp_path / "b.pt", on_step=kill_at(5))  # resume at 4
    stage2(cfg, caches, features, tmp_path / "b.pt")
    assert_same_state(load_checkpoint(tmp_path / "a.pt", "stage2")[0],
                      load_checkpoint(tmp_path / "b.pt", "stage2")[0])


def test_resume_state_of_another_config_is_not_used(caches, tmp_path):
    out = tmp_path / "stage1.pt"
    with pytest.raises(Killed):
        stage1(tiny_cfg(stage1={"iterations": 3}), caches, out, "rgb", on_step=kill_at(2))
    assert side_paths(out)["resume"].is_file()
    history = stage1(tiny_cfg(stage1={"iterations": 3, "lr_frontend": 0.002}), caches, out, "rgb")
    assert history["step"] == [1, 2, 3]  # started over


def test_nan_loss_names_step_and_frame(caches, tmp_path, monkeypatch):
    bad_video = None
    original = RegionFrames.__getitem__

    def poisoned(self, i):
        nonlocal bad_video
        item = original(self, i)
        if "rgb" in item and i == 0:
            bad_video = f"{item['video']}/{item['frame']:05d}"
            item["rgb"] = torch.full_like(item["rgb"], float("nan"))
        return item

    monkeypatch.setattr(RegionFrames, "__getitem__", poisoned)
    cfg = tiny_cfg(stage1={"iterations": 20, "batch_size": 2})
    with pytest.raises(NonFiniteLoss, match=r"at step \d+") as exc:
        stage1(cfg, caches, tmp_path / "s1.pt", streams="rgb")
    assert bad_video in str(exc.value)
    assert not (tmp_path / "s1.pt").exists()


def test_parse_sources():
    assert parse_sources("model+gt") == ("gt", "model")
    with pytest.raises(ValueError):
        parse_sources("coco+gt")


def test_stage1_accumulation_matches_the_whole_batch(caches, tmp_path):
    """``stage1.accumulate`` reaches the engine: batch 2 as 2 micro-batches of 1 gives the
    weights of batch 2 at once (frozen BatchNorm, equal-size frames: exact up to rounding)."""
    whole = tiny_cfg(stage1={"iterations": 2, "batch_size": 2, "freeze_bn": True})
    acc = tiny_cfg(stage1={"iterations": 2, "batch_size": 2, "freeze_bn": True, "accumulate": 2})
    stage1(whole, caches, tmp_path / "whole.pt", streams="rgb")
    stage1(acc, caches, tmp_path / "acc.pt", streams="rgb")
    a, b = (load_checkpoint(tmp_path / f, "stage1")[0] for f in ("whole.pt", "acc.pt"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_two_runs_same_seed_same_threads_are_bit_identical(caches, tmp_path):
    """Determinism as the README states it: two processes, same seed and config, ``--threads 1``
    each: the same stage-1 weights bit for bit (two streams, 3 SGD steps)."""
    args = ["--release", str(caches["release"]), "--index", str(caches["index"]),
            "--frames-dir", str(caches["frames"]), "--flow-dir", str(caches["flow"]),
            "--streams", "rgbflow", "--threads", "1",
            "--config-json", config_json(tiny_cfg(stage1={"iterations": 3}))]
    for run in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "pipeline.region.train_baseline", *args,
                               "--out", str(tmp_path / run / "stage1.pt")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "torch threads 1" in proc.stderr
    assert_same_state(load_checkpoint(tmp_path / "a" / "stage1.pt", "stage1")[0],
                      load_checkpoint(tmp_path / "b" / "stage1.pt", "stage1")[0])
