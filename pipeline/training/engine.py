"""The explicit, resumable training loop of every training stage (DETR ``engine.py`` style).

Reproducibility contract (tested on CPU): a run killed at any point and restarted with the same
config ends with **the same weights** as an uninterrupted run. What makes it hold:

- the data order is a pure function of ``(seed, step)`` (``batches``, by default
  :func:`~pipeline.training.schedule.batch_indices`), not of a sampler's hidden state, so a
  resumed run draws exactly the batches the killed one would have;
- a resume state (model, optimizer, LR scheduler, AMP scaler, torch CPU/CUDA RNG states, step,
  loss history, training seconds) is saved atomically every ``checkpoint_every`` steps and
  restored as a whole;
- the DataLoader gets its own generator, so creating it never consumes the global RNG (which
  dropout and Mask R-CNN's sampling draw from).

On a GPU, cuDNN/atomics make runs close but not bitwise equal; that is expected.

A non-finite loss raises :class:`NonFiniteLoss` naming the step and the batch's items. Loss
curves are written at every checkpoint and at the end.

The global batch is ``spec.batch_size`` items, whatever the hardware; two ways split it:

- Several processes (torchrun, :mod:`pipeline.distributed`): every rank draws the same global
  batch and trains on its share (:func:`pipeline.distributed.shard`: items ``rank::world``,
  sizes differing by at most one); the model is wrapped in ``DistributedDataParallel``, which
  averages the gradients over the ranks.
- Gradient accumulation (``spec.accumulate`` = K): a rank's share is dealt into K micro-batches
  (:func:`~pipeline.training.schedule.split`, the same dealing), each forwarded and backwarded
  alone, their gradients summed before the one optimizer step (DDP synchronises only the last
  micro-batch's backward, ``no_sync`` before). Activation memory is that of one micro-batch.

Micro-batch j of m_j items (a whole share when K = 1) has its loss multiplied by
``m_j * world / batch_size``, so that the summed, rank-averaged gradient is that of the loss
averaged over the global batch's items: one process's semantics with the whole batch at once.
It is exact up to float rounding when the loss is a mean over equally weighted items and the
model has no BatchNorm in training mode or dropout (tested); BatchNorm normalises each
micro-batch (and, on the CPU, each rank's share) on its own; on CUDA BatchNorm layers become
``SyncBatchNorm`` across ranks (``spec.sync_bn``). Logged terms are the item-weighted mean over
micro-batches and ranks. Only rank 0 writes the resume state and the loss curves; every rank
loads the resume state (each its own RNG state), so a resumed multi-process run continues as
the uninterrupted one would. A NaN on any rank stops every rank at the same step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pipeline import checkpoint, distributed
from pipeline.atomic import atomic_path
from pipeline.training.curves import History, HistoryWriter
from pipeline.training.precision import autocast, autocast_dtype, to_device
from pipeline.training.schedule import batch_indices, lr_factor, split

log = logging.getLogger("pipeline.training.engine")

#: loss_fn(model, batch on device) -> {"loss": scalar to minimise, other terms: scalars to log}
LossFn = Callable[[nn.Module, Any], dict[str, Tensor]]
#: (start, stop) -> the global batches of steps start..stop-1 as lists of dataset keys (indices,
#: or whatever the dataset takes); a pure function of its arguments (the resume contract)
Batches = Callable[[int, int], Iterable[Sequence[Any]]]


@dataclass(frozen=True)
class RunSpec:
    """How long and how to train (from a stage's config section)."""

    iterations: int
    batch_size: int  # the global batch: items per optimizer step, over ranks and micro-batches
    checkpoint_every: int
    lr_policy: str  # pipeline.training.schedule.lr_factor: "poly" | "constant" | "multistep"
    seed: int
    device: torch.device
    amp: bool
    num_workers: int = 0
    accumulate: int = 1  # micro-batches per step and rank (gradient accumulation)
    warmup_iterations: int = 0  # linear LR warm-up from 1/1000 (any policy)
    lr_decay_at: tuple[float, ...] = ()  # "multistep" policy: fractions of iterations ...
    lr_decay_factor: float = 0.1  # ... where the LR is multiplied by this
    log_every: int | None = None  # steps between progress lines; None: 20 lines per run
    # Several processes only (see the module docstring and pipeline.distributed.wrap):
    find_unused_parameters: bool = False  # a step may leave trainable parameters without grad
    sync_bn: bool = True  # CUDA: BatchNorm statistics over the global batch (SyncBatchNorm)

    def lr_factor(self, step: int) -> float:
        return lr_factor(self.lr_policy, step, self.iterations, decay_at=self.lr_decay_at,
                         decay_factor=self.lr_decay_factor, warmup=self.warmup_iterations)


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


class Trainer:
    """Train ``model`` with ``loss_fn`` on ``dataset`` for ``spec.iterations`` steps.

    Args:
        model: the module whose parameters ``optimizer`` updates (already on ``spec.device``;
            frozen layers already frozen). Under torchrun it is wrapped in DDP here, and
            ``loss_fn`` receives the wrapper: call it, do not reach into its attributes.
        loss_fn: see :data:`LossFn`; its ``"loss"`` must be a mean over the batch's items.
        dataset: indexed by the keys ``batches`` gives.
        optimizer: over the parameters to learn (param groups carry their base LR).
        spec: schedule, seed, device, precision, accumulation.
        state_path: resume state file (saved every ``checkpoint_every`` steps; loaded at start
            if it exists and was written under the same ``config_sha256``).
        config_sha256: identity of the run (config, data); a resume state of another run is
            ignored (and overwritten), never mixed in.
        collate: items -> one batch as ``loss_fn`` takes it (a dict; tensors and lists of
            tensors in it are moved to the device).
        describe: batch -> its items' ids, for the non-finite-loss error.
        batches: see :data:`Batches`; default :func:`batch_indices` over ``len(dataset)``.
        train_mode: puts the model in training mode (e.g. keeping BatchNorm frozen).
        curves: writes the loss history (rank 0; at every resume state and at the end).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, dataset: Dataset,
                 optimizer: torch.optim.Optimizer, spec: RunSpec, *, state_path: str | Path,
                 config_sha256: str, collate: Callable[[list[Any]], dict[str, Any]],
                 describe: Callable[[dict[str, Any]], str], batches: Batches | None = None,
                 train_mode: Callable[[nn.Module], None] | None = None,
                 curves: HistoryWriter | None = None) -> None:
        self.loss_fn, self.dataset = loss_fn, dataset
        self.optimizer, self.spec = optimizer, spec
        self.collate, self.describe = collate, describe
        self.batches = batches or (lambda start, stop: (
            batch_indices(len(dataset), spec.batch_size, spec.seed, s)
            for s in range(start, stop)))
        # net: what the loss calls (DDP under torchrun); model: the plain module (state dicts)
        self.net = distributed.wrap(model, spec.device, sync_bn=spec.sync_bn,
                                    find_unused_parameters=spec.find_unused_parameters)
        self.model = distributed.unwrap(self.net)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if spec.accumulate < 1 or spec.batch_size // self.world < spec.accumulate:
            raise ValueError(f"batch_size {spec.batch_size} over {self.world} process(es) "
                             f"cannot be split into accumulate={spec.accumulate} micro-batches "
                             "of at least one item each")
        self.shard_size = distributed.shard_size(spec.batch_size)
        # items of each micro-batch, and the factor that weighs them as part of the global batch
        self.micro_sizes = [len(range(j, self.shard_size, spec.accumulate))
                            for j in range(spec.accumulate)]
        self.micro_scales = [m * self.world / spec.batch_size for m in self.micro_sizes]
        self.state_path = Path(state_path)
        self.config_sha256 = config_sha256
        self.train_mode = train_mode or (lambda m: m.train())
        self.curves = curves
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, spec.lr_factor)
        self.amp_dtype = autocast_dtype(spec.device, spec.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.seconds = 0.0  # training time, summed over resumed runs
        self.history: History = {"step": []}

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
            "seconds": self.seconds,
        }
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)
        if self.curves is not None:
            self.curves(self.history)

    def load_state(self) -> bool:
        """Restore a resume state of this run if there is one; True if restored."""
        if not self.state_path.is_file():
            return False
        state = checkpoint.read(self.state_path, "resume state")
        if state.get("config_sha256") != self.config_sha256:
            log.warning("%s: resume state of another config or training set (%s): starting "
                        "over from step 0", self.state_path, state.get("config_sha256"))
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.step = int(state["step"])
        self.seconds = float(state.get("seconds", 0.0))
        rngs = state.get("rng_ranks", [state["rng"]])
        if len(rngs) != self.world and self.world > 1:
            log.warning("%s: written by %d process(es), now %d: every rank takes rank 0's RNG "
                        "state", self.state_path, len(rngs), self.world)
        _set_rng_state(rngs[self.rank] if len(rngs) == self.world else rngs[0], self.spec.device)
        log.info("resumed from %s at step %d", self.state_path, self.step)
        return True

    # -- loop ---------------------------------------------------------------------------------
    def _loader(self, start: int, stop: int) -> DataLoader:
        """Micro-batches of steps ``start..stop-1`` in order, ``spec.accumulate`` per step."""
        spec = self.spec
        micro = [mb for batch in self.batches(start, stop)
                 for mb in split(distributed.shard(batch), spec.accumulate)]
        # Own generator: DataLoader draws worker base seeds from it instead of the global RNG.
        gen = torch.Generator().manual_seed(spec.seed * 7919 + start)
        return DataLoader(self.dataset, batch_sampler=micro, collate_fn=self.collate,
                          num_workers=spec.num_workers, generator=gen,
                          pin_memory=spec.device.type == "cuda")

    def train_step(self, micro_batches: Sequence[dict[str, Any]]) -> dict[str, float]:
        """One optimisation step on this rank's ``spec.accumulate`` collated micro-batches;
        returns the logged terms as floats (item-weighted mean over the global batch)."""
        if len(micro_batches) != len(self.micro_sizes):
            raise ValueError(f"expected {len(self.micro_sizes)} micro-batches, "
                             f"got {len(micro_batches)}")
        self.train_mode(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        last = len(micro_batches) - 1
        for j, batch in enumerate(micro_batches):
            batch = to_device(batch, self.spec.device)
            # DDP all-reduces the accumulated gradients once, in the last backward
            no_sync = getattr(self.net, "no_sync", None)
            sync = no_sync() if no_sync is not None and j < last else contextlib.nullcontext()
            with sync:
                with autocast(self.spec.device, self.amp_dtype):
                    terms = self.loss_fn(self.net, batch)
                loss = terms["loss"]
                finite = bool(torch.isfinite(loss.detach()).all())
                bad = distributed.ranks_where(not finite)  # every rank stops if one sees a NaN
                if bad:
                    values = {k: float(v.detach()) for k, v in terms.items()}
                    where = (f"(terms {values}) on batch [{self.describe(batch)}]" if not finite
                             else f"on rank(s) {bad}, not this one (see that rank's error)")
                    raise NonFiniteLoss(f"non-finite loss at step {self.step} {where}")
                self.scaler.scale(loss * self.micro_scales[j]).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + self.micro_sizes[j] * float(v.detach())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return distributed.all_reduce_mean({k: v / self.shard_size for k, v in sums.items()},
                                           weight=self.shard_size)

    def fit(self, on_step: Callable[[int, dict[str, float]], None] | None = None,
            stop: int | None = None) -> History:
        """Train from the resume state (or step 0) to ``spec.iterations``; return the history.

        ``on_step(step, terms)`` is called after each completed step (``step`` counts completed
        steps), e.g. to log or, in tests, to simulate a kill. ``stop``: end after this many
        completed steps instead, with a resume state (to split a run over several jobs).
        """
        if not self.load_state() and self.rank > 0:
            # distinct random streams per rank (dropout masks), rank 0 keeps the one-process one
            torch.manual_seed(torch.initial_seed() + self.rank)
        spec = self.spec
        end = spec.iterations if stop is None else min(stop, spec.iterations)
        every = spec.log_every or max(1, spec.iterations // 20)
        t0 = tic = time.perf_counter()
        micro = iter(self._loader(self.step, end))
        for _ in range(self.step, end):
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            terms = self.train_step([next(micro) for _ in range(spec.accumulate)])
            self.step += 1
            self.history["step"].append(self.step)
            for k, v in terms.items():
                self.history.setdefault(k, []).append(v)
            for i, lr in enumerate(lrs):
                self.history.setdefault(f"lr{i}", []).append(lr)
            now = time.perf_counter()
            self.seconds, tic = self.seconds + now - tic, now
            if (self.step % every == 0 or self.step == end) and self.rank == 0:
                extra = " ".join(f"{k} {v:.3f}" for k, v in terms.items() if k != "loss")
                log.info("step %d/%d lr %.2e loss %.4f %s(%.2f s/step)", self.step,
                         spec.iterations, lrs[0], terms["loss"], f"({extra}) " if extra else "",
                         (now - t0) / every)
                t0 = now
            if self.step < spec.iterations and (self.step % spec.checkpoint_every == 0
                                                or self.step == end):
                self.save_state()
            if on_step is not None:
                on_step(self.step, terms)
        if self.curves is not None and self.rank == 0:
            self.curves(self.history)
        return self.history

    def finish(self) -> None:
        """Remove the resume state once the final weights are written (rank 0)."""
        if self.rank == 0:
            self.state_path.unlink(missing_ok=True)
