"""Mixed precision and device moves of collated batches, shared by training and prediction."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move tensors (and lists of tensors) of a collated batch to ``device``; other values
    (ids, lists of target dicts) stay as they are."""
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
    """``torch.autocast`` in ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
