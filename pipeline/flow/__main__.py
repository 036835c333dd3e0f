"""Stage ``flow``: optical flow of a video's annotated frames and their context.

    python -m pipeline.flow --frames results/frames/ID.h5 --out results/flow/ID.h5 \\
        [--threads N] [--config config.yaml | --config-json JSON]

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

from pipeline.cli import run_stage, setup_logging
from pipeline.config import add_config_args, config_from_args
from pipeline.flow.stage import FlowConfig, compute_flow

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
    parser.add_argument("--frames", type=Path, required=True, help="frames cache (stage frames)")
    parser.add_argument("--out", type=Path, required=True, help="flow cache (.h5) to write")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)),
                        help="CPU threads for OpenCV/torch (default: $OMP_NUM_THREADS or 1)")
    add_config_args(parser, "flow")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = config_from_args(args, FlowConfig, "flow")
    _set_threads(max(1, args.threads))
    # A ValueError here is a bad configuration (unknown backend/model, no checkpoint).
    return run_stage(log, compute_flow, args.frames, args.out, cfg, config_errors=True)


if __name__ == "__main__":
    sys.exit(main())
