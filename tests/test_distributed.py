"""Multi-process training (pipeline.distributed + the engine's Trainer) on the CPU with gloo:
2 processes on one global batch give the weights of 1 process, resume under 2 processes equals
an uninterrupted run, a NaN on one rank stops both (no hang), and a real stage under torchrun
writes exactly one checkpoint."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from conftest import ROOT
from pipeline import distributed
from pipeline.region.data import collate, describe_batch
from pipeline.training.curves import curve_writer
from pipeline.training.engine import NonFiniteLoss, RunSpec, Trainer
from pipeline.training.schedule import batch_indices

N_ITEMS, SEED = 11, 5
TIMEOUT_S = 90  # a hung collective fails the test instead of blocking the suite


class Toy(Dataset):
    """Items as the engine's collate takes them; item ``nan_item`` has NaN features."""

    def __init__(self, nan_item: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(N_ITEMS, 5, generator=g), torch.randn(N_ITEMS, 3, generator=g)
        self.nan_item = nan_item

    def __len__(self) -> int:
        return N_ITEMS

    def __getitem__(self, i: int) -> dict:
        x = self.x[i] * float("nan") if i == self.nan_item else self.x[i]
        return {"features": x, "action": self.y[i], "video": "toy", "frame": i}


def mse(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    loss = ((model(batch["features"]) - batch["action"]) ** 2).mean()  # a mean over items
    return {"loss": loss, "loss_mse": loss.detach() * 2}


class Killed(Exception):
    pass


def train_toy(out: str, batch_size: int, iterations: int, dropout: float = 0.0,
              kill_at: int | None = None, nan_item: int | None = None,
              accumulate: int = 1) -> dict:
    """Train the toy model (no BatchNorm) with the engine; its final weights and history."""
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    spec = RunSpec(iterations=iterations, batch_size=batch_size, checkpoint_every=2,
                   lr_policy="poly", seed=SEED, device=torch.device("cpu"), amp=False,
                   accumulate=accumulate)
    trainer = Trainer(model, mse, Toy(nan_item), optimizer, spec, state_path=Path(out) / "state.pt",
                      config_sha256="toy", collate=collate, describe=describe_batch,
                      curves=curve_writer(Path(out) / "loss.csv", Path(out) / "loss.png"))

    def on_step(step: int, terms: dict) -> None:
        if step == kill_at:
            raise Killed(f"killed after step {step}")

    history = trainer.fit(on_step)
    trainer.finish()
    return {"state": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            "history": history, "rank": distributed.rank()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, result: str, fn, kwargs: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        with distributed.session(torch.device("cpu")):
            out = {"ok": fn(**kwargs)}
    except Exception as exc:  # reported to the test, which decides
        out = {"error": type(exc).__name__, "message": str(exc), "tb": traceback.format_exc()}
    torch.save(out, result)


def run_world(world: int, tmp: Path, fn=train_toy, **kwargs) -> list[dict]:
    """``fn(**kwargs)`` in ``world`` processes joined by gloo; each rank's result (or error)."""
    ctx, port = multiprocessing.get_context("spawn"), _free_port()
    results = [tmp / f"rank{r}.pt" for r in range(world)]
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(results[r]), fn, kwargs))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT_S)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} still running after {TIMEOUT_S} s (a hang)"
    assert all(r.is_file() for r in results), [p.exitcode for p in procs]
    return [torch.load(r, weights_only=False) for r in results]


def assert_close(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-5, msg=k)


def test_one_process_helpers_are_no_ops():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    assert distributed.all_reduce_mean({"loss": 0.25}, weight=3) == {"loss": 0.25}
    assert distributed.ranks_where(True) == [0] and distributed.ranks_where(False) == []
    model = nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda")


@pytest.mark.parametrize("batch_size", [4, 5])  # 5: shards of 3 and 2 items, weighted
def test_two_processes_match_one_on_the_global_batch(tmp_path, batch_size):
    one = train_toy(str(tmp_path), batch_size=batch_size, iterations=6)
    two = run_world(2, tmp_path, out=str(tmp_path / "w2"), batch_size=batch_size, iterations=6)
    assert all("ok" in r for r in two), [r.get("tb") for r in two]
    for r in two:  # every rank ends with the same weights and logs the global-batch loss
        assert_close(r["ok"]["state"], one["state"])
        assert r["ok"]["history"]["loss"] == pytest.approx(one["history"]["loss"], rel=1e-5)
    rows = (tmp_path / "w2" / "loss.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and not (tmp_path / "w2" / "state.pt").exists()


def uninterrupted_then_killed(out: str, **kw) -> dict:
    """An uninterrupted run in ``out/a``; the same run killed after step 3 in ``out/b``."""
    whole = train_toy(f"{out}/a", **kw)
    with pytest.raises(Killed):
        train_toy(f"{out}/b", kill_at=3, **kw)
    return whole


def test_two_process_resume_equals_uninterrupted(tmp_path):
    # dropout draws from each rank's RNG: every rank must get its own RNG state back
    kw = {"batch_size": 4, "iterations": 6, "dropout": 0.3}
    whole = run_world(2, tmp_path, uninterrupted_then_killed, out=str(tmp_path), **kw)
    assert all("ok" in r for r in whole), [r.get("tb") for r in whole]
    assert (tmp_path / "b" / "state.pt").is_file()  # written at step 2, by rank 0
    resumed = run_world(2, tmp_path, out=str(tmp_path / "b"), **kw)  # fresh processes
    for a, b in zip(whole, resumed):
        assert_close(a["ok"]["state"], b["ok"]["state"], atol=0)
        assert a["ok"]["history"] == b["ok"]["history"]


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    step = 2
    bad = batch_indices(N_ITEMS, 4, SEED, step)[1]  # rank 1's first item of step 2
    results = run_world(2, tmp_path, out=str(tmp_path), batch_size=4, iterations=6,
                        nan_item=bad)
    assert [r.get("error") for r in results] == ["NonFiniteLoss", "NonFiniteLoss"]
    assert f"at step {step} on rank(s) [1]" in results[0]["message"]
    assert f"at step {step} (terms" in results[1]["message"]
    assert f"toy/{bad:05d}" in results[1]["message"]
    assert issubclass(NonFiniteLoss, FloatingPointError)


# The stage test's imports live in it: spawned ranks import this module, and the model code
# would double their start-up time.
@pytest.fixture(scope="module")
def caches(tiny_release, tmp_path_factory):
    from region_support import build_caches

    return build_caches(tiny_release, tmp_path_factory.mktemp("region_caches"))


def test_stage1_under_torchrun_writes_one_checkpoint_like_one_process(caches, tmp_path):
    """The real stage-1 entry point, 2 processes: one checkpoint, no leftovers, and the weights
    of one process on the same global batch (frozen BatchNorm and equal-size frames: the loss is
    a mean over equally weighted items)."""
    from pipeline.provenance import config_json
    from pipeline.region.build import load_checkpoint
    from pipeline.region.train_baseline import main as stage1_main
    from test_region_train import tiny_cfg

    cfg = tiny_cfg(stage1={"iterations": 2, "batch_size": 2, "freeze_bn": True})
    args = ["--release", str(caches["release"]), "--index", str(caches["index"]),
            "--frames-dir", str(caches["frames"]), "--streams", "rgb",
            "--config-json", config_json(cfg)]
    assert stage1_main([*args, "--out", str(tmp_path / "one" / "stage1.pt")]) == 0
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node",
         "2", "-m", "pipeline.region.train_baseline", *args,
         "--out", str(tmp_path / "two" / "stage1.pt")],
        cwd=ROOT, capture_output=True, text=True, timeout=2 * TIMEOUT_S,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "stage1.pt", "stage1_loss.csv", "stage1_loss.png"]
    assert "process 0 of 2" in proc.stderr and "process 1 of 2" in proc.stderr
    assert proc.stderr.count("stage 1 (rgb)") == 1  # rank 1 logs warnings only
    one, meta_one, _ = load_checkpoint(tmp_path / "one" / "stage1.pt", "stage1")
    two, meta_two, _ = load_checkpoint(tmp_path / "two" / "stage1.pt", "stage1")
    assert meta_two["steps"] == 2
    assert_close(two, one, atol=1e-4)
    assert meta_two["final_loss"] == pytest.approx(meta_one["final_loss"], rel=1e-4)
