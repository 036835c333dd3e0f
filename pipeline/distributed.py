"""Data-parallel training on the GPUs of one node: torch DDP, one process per GPU, via torchrun.

    torchrun --standalone --nproc_per_node 4 -m pipeline.region.train_baseline ...

torchrun starts the processes and tells each one its place through the environment:
``WORLD_SIZE`` (processes in all), ``RANK`` (this one, 0-based), ``LOCAL_RANK`` (its GPU on the
node), plus ``MASTER_ADDR`` / ``MASTER_PORT`` for the rendezvous. Started as a plain
``python -m`` there are no such variables: the world is one process and every helper here is a
no-op (no process group; rank 0 of 1), so a stage runs exactly as it does without this module.

How a training stage uses it (the loop itself is :class:`pipeline.training.engine.Trainer`):

- its ``main`` runs inside :func:`session`, which joins the process group (NCCL when the
  stage's device is CUDA, gloo on the CPU) and gives the process its device, ``cuda:LOCAL_RANK``;
- every rank draws the same global batch and trains on its part of it (:func:`shard`);
  :func:`wrap` puts the model in ``DistributedDataParallel``, which averages the gradients;
- logged values are averaged over the ranks (:func:`all_reduce_mean`); a NaN on any rank stops
  every rank (:func:`ranks_where`);
- only rank 0 (:func:`is_main`) writes files.

Nothing happens at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["LaunchEnv", "all_reduce_mean", "barrier", "gather_objects", "init", "is_main",
           "launch_env", "local_device", "loss_scale", "rank", "ranks_where", "session", "shard",
           "shard_size", "teardown", "unwrap", "world_size", "wrap"]

log = logging.getLogger("pipeline.distributed")
T = TypeVar("T")


@dataclass(frozen=True)
class LaunchEnv:
    """This process's place as torchrun describes it (1 process, rank 0 without torchrun)."""

    world_size: int
    rank: int
    local_rank: int


def launch_env() -> LaunchEnv:
    """Read ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` (set by torchrun) from the environment."""
    env = os.environ
    return LaunchEnv(int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)),
                     int(env.get("LOCAL_RANK", 0)))


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes training together (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def is_main() -> bool:
    """True on the one process that writes outputs, logs progress and saves resume states."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for a CUDA stage under torchrun, else
    ``device`` unchanged (a CPU stage, or one process)."""
    env = launch_env()
    if device.type == "cuda" and env.world_size > 1:
        return torch.device("cuda", env.local_rank)
    return device


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group if there is more than one process; return this process's
    device (:func:`local_device`). NCCL for CUDA, gloo for the CPU. Idempotent."""
    env = launch_env()
    local = local_device(device)
    if env.world_size == 1 or _active():
        return local
    if local.type == "cuda":
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=local)
    else:
        dist.init_process_group("gloo")
    log.info("process %d of %d on %s", dist.get_rank(), dist.get_world_size(), local)
    return local


def teardown() -> None:
    """Leave the process group (no-op without one)."""
    if _active():
        dist.destroy_process_group()


@contextmanager
def session(device: torch.device) -> Iterator[torch.device]:
    """``with session(device) as device:`` around a training stage's work: :func:`init` on
    entry, :func:`teardown` on exit (also on errors, so a failing rank leaves cleanly).

    Ranks other than 0 log warnings and errors only: the same progress line once per process
    would drown a job's log.
    """
    started = not _active()
    local = init(device)
    if rank() > 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield local
    finally:
        if started:
            teardown()


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if _active():
        dist.barrier()


def shard(batch: Sequence[T]) -> list[T]:
    """This rank's part of a global batch: items ``rank, rank + W, rank + 2W, ...`` (W = world
    size). Sizes differ by at most one item when ``W`` does not divide the batch.

    Raises:
        ValueError: fewer items than ranks (a rank would get nothing to train on).
    """
    w = world_size()
    if len(batch) < w:
        raise ValueError(f"a batch of {len(batch)} cannot be shared by {w} processes: use a "
                         f"batch_size of at least {w} or fewer GPUs (cluster.train_gpus)")
    return list(batch[rank()::w])


def shard_size(batch_size: int) -> int:
    """How many items of a global batch of ``batch_size`` :func:`shard` gives this rank."""
    return len(range(rank(), batch_size, world_size()))


def loss_scale(batch_size: int) -> float:
    """Factor for this rank's loss (a mean over its items) so that DDP's gradient mean over
    the ranks weighs every item of the global batch alike, also when the shards differ in size:
    ``shard_size * world / batch_size``, exactly 1.0 when the world size divides the batch."""
    return shard_size(batch_size) * world_size() / batch_size


def wrap(model: nn.Module, device: torch.device, *, find_unused_parameters: bool = False,
         sync_bn: bool = True) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when there is more than one process (else as is).

    DDP broadcasts rank 0's parameters and buffers once here, then averages the gradients over
    the ranks during ``backward``. Only parameters with ``requires_grad`` at this point are
    synchronised: freeze layers before wrapping.

    Args:
        find_unused_parameters: set it when a step can leave trainable parameters without a
            gradient (a branch skipped for some inputs); otherwise DDP waits for their gradients
            and fails at the next step. It costs one graph traversal per step, so it is off.
        sync_bn: on CUDA, turn BatchNorm layers into ``SyncBatchNorm`` so that batch
            statistics are taken over the global batch, as in one process. The CPU (gloo) has no
            SyncBatchNorm: BatchNorm there normalises each rank's share on its own.
    """
    if world_size() == 1:
        return model
    if sync_bn and device.type == "cuda":
        # in place for every BatchNorm below the root: parameters (and so the optimizer's
        # references and the state-dict keys) stay the same
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a :func:`wrap` result (its state dict has no ``module.``)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _comm_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo takes CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: dict[str, float], weight: float = 1.0) -> dict[str, float]:
    """``sum_r weight_r * values_r / sum_r weight_r`` over the ranks, for logging (every rank
    gets the result). With ``weight`` = the rank's number of items, a mean over each rank's items
    becomes the mean over the global batch. Returns ``values`` itself in one process.
    """
    if world_size() == 1:
        return values
    keys = list(values)
    buf = torch.tensor([weight * values[k] for k in keys] + [weight], dtype=torch.float64,
                       device=_comm_device())
    dist.all_reduce(buf)
    return {k: float(buf[i] / buf[-1]) for i, k in enumerate(keys)}


def ranks_where(flag: bool) -> list[int]:
    """The ranks on which ``flag`` is true (every rank gets the same list): one collective, so
    that every rank can act on a condition seen by one (e.g. stop on a NaN without a hang)."""
    if world_size() == 1:
        return [0] if flag else []
    buf = torch.zeros(world_size(), dtype=torch.int32, device=_comm_device())
    buf[rank()] = int(flag)
    dist.all_reduce(buf)
    return [r for r, f in enumerate(buf.tolist()) if f]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), indexed by rank, on every rank; ``[obj]`` in one
    process."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
