"""Run-to-run reproducibility of a training stage: its thread count and deterministic kernels.

What is bit-identical (measured, see ``docs/architecture.md`` "Determinism"): on the CPU, the
same seed, the same machine and the same thread count give the same weights bit for bit. Another
thread count splits float reductions differently, so the weights differ in the last bits and
the difference grows with training; another CPU (other SIMD kernels) likewise.
"""

from __future__ import annotations

import logging
import os

import torch

from pipeline import distributed

log = logging.getLogger("pipeline.training.determinism")


def configure(threads: int | None) -> None:
    """Call once at the start of a training stage, before building its model.

    ``threads``: the job's CPU threads (the rule's ``threads:``), shared by torchrun's
    processes; None leaves torch's default (every core, or ``OMP_NUM_THREADS``), which makes the
    result depend on the machine. Deterministic algorithms are switched on with
    ``warn_only=True``: an op without a deterministic kernel warns instead of failing, and
    CUDA's cuBLAS gets the workspace setting it needs to be deterministic (effective when CUDA
    has not been initialised yet).
    """
    if threads:
        torch.set_num_threads(max(1, threads // distributed.launch_env().world_size))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    log.info("torch threads %d, deterministic algorithms on", torch.get_num_threads())
