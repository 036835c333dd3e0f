"""The training engine's schedules and gradient accumulation (pipeline.training): K micro-batches
of a global batch give the weights of the whole batch at once, in one process and under DDP
(2 processes, gloo), also with uneven splits and across a resume."""

from __future__ import annotations

import pytest
import torch
from test_distributed import Killed, assert_close, run_world, train_toy
from torch import nn

from pipeline.region.data import collate, describe_batch
from pipeline.training.engine import RunSpec, Trainer
from pipeline.training.schedule import lr_factor, split


def test_split_deals_items_like_the_ranks():
    assert split([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert split([7], 1) == [[7]]
    with pytest.raises(ValueError, match="2 item.* 3 micro-batches"):
        split([0, 1], 3)


def test_multistep_policy_with_warmup():
    # warm-up 10 steps from 1/1000, decays by 0.1 at 50% and 80% of 100 steps
    f = lambda s: lr_factor("multistep", s, 100, decay_at=(0.5, 0.8), decay_factor=0.1,  # noqa
                            warmup=10)
    assert f(0) == pytest.approx(1e-3) and f(5) == pytest.approx(0.5 * 1e-3 + 0.5)
    assert f(10) == 1.0 and f(49) == 1.0
    assert f(50) == pytest.approx(0.1) and f(80) == pytest.approx(0.01)
    assert lr_factor("poly", 0, 100, warmup=4) == pytest.approx(1e-3)


# (global batch, micro-batches): 4 = 2 + 2; 5 = 3 + 2 (uneven, weighted); 4 = 1 + 1 + 1 + 1
CASES = [(4, 2), (5, 2), (4, 4)]


@pytest.mark.parametrize("batch_size,accumulate", CASES)
def test_accumulation_matches_the_whole_batch(tmp_path, batch_size, accumulate):
    whole = train_toy(str(tmp_path / "whole"), batch_size=batch_size, iterations=5)
    acc = train_toy(str(tmp_path / "acc"), batch_size=batch_size, iterations=5,
                    accumulate=accumulate)
    assert_close(acc["state"], whole["state"], atol=1e-6)
    assert acc["history"]["loss"] == pytest.approx(whole["history"]["loss"], rel=1e-6)
    # and the comparison can fail: another global batch gives other weights
    other = train_toy(str(tmp_path / "other"), batch_size=2, iterations=5)
    assert not torch.allclose(other["state"]["0.weight"], whole["state"]["0.weight"], atol=1e-4)


@pytest.mark.parametrize("batch_size", [4, 5])  # 5: shards 3 (micro 2 + 1) and 2 (1 + 1)
def test_two_processes_times_accumulation_match_one_process(tmp_path, batch_size):
    one = train_toy(str(tmp_path / "one"), batch_size=batch_size, iterations=5)
    two = run_world(2, tmp_path, out=str(tmp_path / "w2"), batch_size=batch_size,
                    iterations=5, accumulate=2)
    assert all("ok" in r for r in two), [r.get("tb") for r in two]
    for r in two:
        assert_close(r["ok"]["state"], one["state"], atol=1e-6)
        assert r["ok"]["history"]["loss"] == pytest.approx(one["history"]["loss"], rel=1e-5)


def test_resume_with_accumulation_is_exact(tmp_path):
    kw = {"batch_size": 5, "iterations": 6, "accumulate": 2, "dropout": 0.3}
    whole = train_toy(str(tmp_path / "a"), **kw)
    with pytest.raises(Killed):
        train_toy(str(tmp_path / "b"), kill_at=3, **kw)
    assert (tmp_path / "b" / "state.pt").is_file()  # step 2
    resumed = train_toy(str(tmp_path / "b"), **kw)
    assert_close(resumed["state"], whole["state"], atol=0)
    assert resumed["history"] == whole["history"]


def test_more_micro_batches_than_items_refused(tmp_path):
    spec = RunSpec(iterations=1, batch_size=2, checkpoint_every=1, lr_policy="constant", seed=0,
                   device=torch.device("cpu"), amp=False, accumulate=3)
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="accumulate=3"):
        Trainer(model, lambda m, b: {}, [], torch.optim.SGD(model.parameters(), lr=0.1), spec,
                state_path=tmp_path / "s.pt", config_sha256="x", collate=collate,
                describe=describe_batch)
