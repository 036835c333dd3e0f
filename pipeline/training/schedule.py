"""What a step trains on and at which learning rate: pure functions of the step, so that a
resumed run repeats exactly what the uninterrupted one would have done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
#: ``lr_policy`` values of the training config sections.
LR_POLICIES: tuple[str, ...] = ("poly", "constant", "multistep")


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


def lr_factor(policy: str, step: int, iterations: int, power: float = 0.9, *,
              decay_at: Sequence[float] = (), decay_factor: float = 0.1,
              warmup: int = 0) -> float:
    """Multiplier of the base learning rates at ``step`` (0-based).

    Policies: ``poly`` (DeepLab: ``(1 - step/iterations) ** power``), ``constant``, ``multistep``
    (times ``decay_factor`` at each fraction ``decay_at`` of ``iterations``, Mask R-CNN's).
    ``warmup`` > 0 ramps any of them linearly from 1/1000 over the first ``warmup`` steps.
    """
    if policy == "constant":
        factor = 1.0
    elif policy == "poly":
        factor = (1.0 - min(step, iterations) / iterations) ** power
    elif policy == "multistep":
        factor = decay_factor ** sum(step >= f * iterations for f in decay_at)
    else:
        raise ValueError(f"unknown lr_policy {policy!r}; choose one of {LR_POLICIES}")
    if step < warmup:
        alpha = step / warmup
        factor *= 1e-3 * (1 - alpha) + alpha
    return factor


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` dealt into ``parts`` lists (``items[j::parts]``), sizes differing by at most one:
    the micro-batches of gradient accumulation, dealt as :func:`pipeline.distributed.shard`
    deals a global batch over the ranks.

    Raises:
        ValueError: fewer items than parts (a micro-batch would be empty).
    """
    if len(items) < parts:
        raise ValueError(f"{len(items)} item(s) cannot be split into {parts} micro-batches")
    return [list(items[j::parts]) for j in range(parts)]
