"""Stage ``flow``: optical flow of a video's annotated frames and their context.

    python -m pipeline.flow --frames results/frames/ID.h5 --out results/flow/ID.h5 \\
        [--threads N] [--config config.yaml | --config-json JSON]

Several videos in one process (a shard job; the backend is built once): repeat the pair,
``--frames A.h5 --out flowA.h5 --frames B.h5 --out flowB.h5``.

Backends (``flow.backend``): ``dis`` (OpenCV DIS, CPU) or ``ptlflow`` (``flow.model``, weights
from ``flow.checkpoint``, batched, on CUDA when ``flow.device`` is auto and a GPU is visible).
Layout of the output: docs/architecture.md; read it with ``pipeline.flow.cache.read_flow_cache``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pipeline.cli import run_stage, run_videos, setup_logging
from pipeline.config import add_config_args, config_from_args
from pipeline.flow.stage import FlowConfig, build_backend, compute_flow

log = logging.getLogger("pipeline.flow")


def _set_threads(n: int) -> None:
    # OpenCV and torch size their pools to the machine, not to the job's allocation.
    # torch is imported later (ptlflow backend only) and reads this at import time.
    os.environ["OMP_NUM_THREADS"] = str(n)
    import cv2

    cv2.setNumThreads(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.flow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, action="append", required=True,
                        help="frames cache (stage frames); repeatable, with one --out each")
    parser.add_argument("--out", type=Path, action="append", required=True,
                        help="flow cache (.h5) to write, one per --frames")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)),
                        help="CPU threads for OpenCV/torch (default: $OMP_NUM_THREADS or 1)")
    add_config_args(parser, "flow")
    args = parser.parse_args(argv)
    setup_logging()
    if len(args.frames) != len(args.out):
        parser.error(f"{len(args.frames)} --frames but {len(args.out)} --out")
    cfg = config_from_args(args, FlowConfig, "flow")
    _set_threads(max(1, args.threads))
    # A ValueError here is a bad configuration (unknown backend/model, no checkpoint).
    backend = []
    status = run_stage(log, lambda: backend.append(build_backend(cfg)), config_errors=True)
    if status:
        return status
    # one backend (one model load) for every video of the job
    jobs = [{"frames_path": f, "out": o} for f, o in zip(args.frames, args.out)]
    return run_videos(log, compute_flow, jobs, cfg=cfg, backend=backend[0], config_errors=True)


if __name__ == "__main__":
    sys.exit(main())
