"""An explicit, resumable training loop shared by both training stages (DETR ``engine.py`` style).

Reproducibility contract (tested on CPU): a run killed at any point and restarted with the same
config ends with **the same weights** as an uninterrupted run. What makes it hold:

- the data order is a pure function of ``(seed, step)`` (:func:`batch_indices`), not of a
  sampler's hidden state, so a resumed run draws exactly the batches the killed one would have;
- a resume state (model, optimizer, LR scheduler, AMP scaler, torch CPU/CUDA RNG states, step,
  loss history) is saved atomically every ``checkpoint_every`` steps and restored as a whole;
- the DataLoader gets its own generator, so creating it never consumes the global RNG (which
  dropout draws from).

On a GPU, cuDNN/atomics make runs close but not bitwise equal; that is expected.

A non-finite loss raises :class:`FloatingPointError` naming the step and the batch's
``video/frame`` ids. Loss curves are written as CSV and PNG at every checkpoint and at the end.

Several processes (torchrun, :mod:`pipeline.distributed`): ``spec.batch_size`` stays the
**global** batch. Every rank draws the same :func:`batch_indices` and trains on its share
(:func:`pipeline.distributed.shard`: items ``rank::world``, sizes differing by at most one); the
model is wrapped in ``DistributedDataParallel``, which averages the gradients over the ranks.
Each rank's loss is scaled by ``its items * world / batch_size`` (exactly 1 when the world size
divides the batch), so the averaged gradient is that of the loss averaged over the global
batch's items: the results semantics of one process with the same batch. It is exact up to
float rounding when the loss is a mean over equally weighted items and the model has no
BatchNorm in training mode or dropout; on CUDA BatchNorm layers become ``SyncBatchNorm``
(``spec.sync_bn``), on the CPU they normalise each share on its own. Logged terms are the same
item-weighted mean over the ranks. Only rank 0 writes the resume state and the loss curves;
every rank loads the resume state (each its own RNG state), so a resumed multi-process run
continues as the uninterrupted one would. A NaN on any rank stops every rank at the same step.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pipeline import distributed
from pipeline.atomic import atomic_path
from pipeline.region.data import collate, describe_batch

log = logging.getLogger("pipeline.region.engine")

#: loss_fn(model, batch on device) -> {"loss": scalar to minimise, other terms: scalars to log}
LossFn = Callable[[nn.Module, dict[str, Any]], dict[str, Tensor]]


@dataclass(frozen=True)
class RunSpec:
    """How long and how to train (from a stage's config section)."""

    iterations: int
    batch_size: int
    checkpoint_every: int
    lr_policy: str  # "poly" (DeepLab: (1 - step/iterations) ** 0.9) | "constant"
    seed: int
    device: torch.device
    amp: bool
    num_workers: int = 0
    # Several processes only (see the module docstring and pipeline.distributed.wrap):
    find_unused_parameters: bool = False  # a step may leave trainable parameters without grad
    sync_bn: bool = True  # CUDA: BatchNorm statistics over the global batch (SyncBatchNorm)


def lr_factor(policy: str, step: int, iterations: int, power: float = 0.9) -> float:
    """Multiplier of the base learning rates at ``step`` (0-based)."""
    if policy == "constant":
        return 1.0
    if policy == "poly":
        return (1.0 - min(step, iterations) / iterations) ** power
    raise ValueError(f"unknown lr_policy {policy!r}; choose 'poly' or 'constant'")


def batch_indices(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Dataset indices of the batch of ``step``: epochs are seeded permutations, consumed in
    order, so the result depends only on the arguments (the resume contract)."""
    if n_items <= 0:
        raise ValueError("cannot draw batches from an empty dataset")
    out: list[int] = []
    pos = step * batch_size
    perm_epoch, perm = -1, None
    for p in range(pos, pos + batch_size):
        epoch = p // n_items
        if epoch != perm_epoch:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perm, perm_epoch = torch.randperm(n_items, generator=g), epoch
        out.append(int(perm[p % n_items]))
    return out


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move tensors (and lists of tensors) of a collated batch to ``device``."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, list) and v and isinstance(v[0], Tensor):
            out[k] = [t.to(device, non_blocking=True) for t in v]
        else:
            out[k] = v
    return out


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bfloat16 on GPUs that have it, else float16 (with loss scaling); None = full precision."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class NonFiniteLoss(FloatingPointError):
    """A NaN/inf loss, with the step and the batch that produced it."""


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def write_curves(history: dict[str, list[float]], csv_path: Path | None,
                 png_path: Path | None, title: str = "") -> None:
    """Loss history (``step`` plus one list per logged term) -> CSV and a PNG plot (Agg)."""
    keys = list(history)
    if csv_path is not None:
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for row in zip(*(history[k] for k in keys)):
                w.writerow([int(row[0])] + [f"{x:.6g}" for x in row[1:]])
    if png_path is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for k in keys:
            if k.startswith("loss"):
                ax.plot(history["step"], history[k], label=k, lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


class Trainer:
    """Train ``model`` with ``loss_fn`` on ``dataset`` for ``spec.iterations`` steps.

    Args:
        model: the module whose parameters ``optimizer`` updates (already on ``spec.device``;
            frozen layers already frozen). Under torchrun it is wrapped in DDP here, and
            ``loss_fn`` receives the wrapper: call it, do not reach into its attributes.
        loss_fn: see :data:`LossFn`.
        dataset: items as :class:`pipeline.region.data.RegionFrames` gives them.
        optimizer: over the parameters to learn (param groups carry their base LR).
        spec: schedule, seed, device, precision.
        state_path: resume state file (saved every ``checkpoint_every`` steps; loaded at start
            if it exists and was written under the same ``config_sha256``).
        config_sha256: identity of the run's config; a resume state of another config is
            ignored (and overwritten), never mixed in.
        train_mode: puts the model in training mode (e.g. keeping BatchNorm frozen).
        curves: (csv, png) paths of the loss curves, or None.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, dataset: Dataset,
                 optimizer: torch.optim.Optimizer, spec: RunSpec, *, state_path: str | Path,
                 config_sha256: str, train_mode: Callable[[nn.Module], None] | None = None,
                 curves: tuple[Path, Path] | None = None, title: str = "") -> None:
        self.loss_fn, self.dataset = loss_fn, dataset
        self.optimizer, self.spec = optimizer, spec
        # net: what the loss calls (DDP under torchrun); model: the plain module (state dicts)
        self.net = distributed.wrap(model, spec.device, sync_bn=spec.sync_bn,
                                    find_unused_parameters=spec.find_unused_parameters)
        self.model = distributed.unwrap(self.net)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.shard_size = distributed.shard_size(spec.batch_size)
        self.loss_scale = distributed.loss_scale(spec.batch_size)  # 1.0 for equal shards
        self.state_path = Path(state_path)
        self.config_sha256 = config_sha256
        self.train_mode = train_mode or (lambda m: m.train())
        self.curves, self.title = curves, title
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(spec.lr_policy, s, spec.iterations))
        self.amp_dtype = autocast_dtype(spec.device, spec.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.history: dict[str, list[float]] = {"step": []}

    # -- resume state -------------------------------------------------------------------------
    def save_state(self) -> None:
        """Write the resume state (rank 0; every rank must call it: RNG states are gathered)."""
        rngs = distributed.gather_objects(_rng_state(self.spec.device))
        if self.rank != 0:
            return
        state = {
            "step": self.step, "config_sha256": self.config_sha256,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rngs[0], "rng_ranks": rngs, "history": self.history,
        }
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)
        if self.curves is not None:
            write_curves(self.history, *self.curves, title=self.title)

    def load_state(self) -> bool:
        """Restore a resume state of this config if there is one; True if restored."""
        if not self.state_path.is_file():
            return False
        state = torch.load(self.state_path, map_location=self.spec.device, weights_only=True)
        if state.get("config_sha256") != self.config_sha256:
            log.warning("%s: resume state of another config (%s), starting from step 0",
                        self.state_path, state.get("config_sha256"))
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.step = int(state["step"])
        rngs = state.get("rng_ranks", [state["rng"]])
        if len(rngs) != self.world and self.world > 1:
            log.warning("%s: written by %d process(es), now %d: every rank takes rank 0's RNG "
                        "state", self.state_path, len(rngs), self.world)
        _set_rng_state(rngs[self.rank] if len(rngs) == self.world else rngs[0], self.spec.device)
        log.info("resumed from %s at step %d", self.state_path, self.step)
        return True

    # -- loop ---------------------------------------------------------------------------------
    def _loader(self, start: int) -> DataLoader:
        n, spec = len(self.dataset), self.spec
        batches = [distributed.shard(batch_indices(n, spec.batch_size, spec.seed, s))
                   for s in range(start, spec.iterations)]
        # Own generator: DataLoader draws worker base seeds from it instead of the global RNG.
        gen = torch.Generator().manual_seed(spec.seed * 7919 + start)
        return DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate,
                          num_workers=spec.num_workers, generator=gen,
                          pin_memory=spec.device.type == "cuda")

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step on a collated batch; returns the logged terms as floats."""
        self.train_mode(self.model)
        batch = to_device(batch, self.spec.device)
        with autocast(self.spec.device, self.amp_dtype):
            terms = self.loss_fn(self.net, batch)
        loss = terms["loss"]
        finite = bool(torch.isfinite(loss.detach()).all())
        bad = distributed.ranks_where(not finite)  # every rank stops if one sees a NaN
        if bad:
            values = {k: float(v.detach()) for k, v in terms.items()}
            where = (f"(terms {values}) on batch [{describe_batch(batch)}]" if not finite else
                     f"on rank(s) {bad}, not this one (see that rank's error)")
            raise NonFiniteLoss(f"non-finite loss at step {self.step} {where}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * self.loss_scale).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return distributed.all_reduce_mean({k: float(v.detach()) for k, v in terms.items()},
                                           weight=self.shard_size)

    def fit(self, on_step: Callable[[int, dict[str, float]], None] | None = None
            ) -> dict[str, list[float]]:
        """Train from the resume state (or step 0) to ``spec.iterations``; return the history.

        ``on_step(step, terms)`` is called after each completed step (``step`` counts completed
        steps), e.g. to log or, in tests, to simulate a kill.
        """
        if not self.load_state() and self.rank > 0:
            # distinct random streams per rank (dropout masks), rank 0 keeps the one-process one
            torch.manual_seed(torch.initial_seed() + self.rank)
        spec = self.spec
        t0, every = time.perf_counter(), max(1, spec.iterations // 20)
        for batch in self._loader(self.step):
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            terms = self.train_step(batch)
            self.step += 1
            self.history["step"].append(self.step)
            for k, v in terms.items():
                self.history.setdefault(k, []).append(v)
            for i, lr in enumerate(lrs):
                self.history.setdefault(f"lr{i}", []).append(lr)
            if (self.step % every == 0 or self.step == spec.iterations) and self.rank == 0:
                log.info("step %d/%d loss %.4f (%.2f s/step)", self.step, spec.iterations,
                         terms["loss"], (time.perf_counter() - t0) / every)
                t0 = time.perf_counter()
            if self.step % spec.checkpoint_every == 0 and self.step < spec.iterations:
                self.save_state()
            if on_step is not None:
                on_step(self.step, terms)
        if self.curves is not None and self.rank == 0:
            write_curves(self.history, *self.curves, title=self.title)
        return self.history

    def finish(self) -> None:
        """Remove the resume state once the final weights are written (rank 0)."""
        if self.rank == 0:
            self.state_path.unlink(missing_ok=True)


def loss_decreased(history: dict[str, list[float]], key: str = "loss", frac: float = 0.2) -> float:
    """Mean of the last ``frac`` of ``key`` divided by the mean of the first ``frac``."""
    values = history[key]
    k = max(1, int(len(values) * frac))
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    return last / first if first > 0 else math.inf
