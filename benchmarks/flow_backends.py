"""Per-frame-pair time of the flow backends, side by side, through the stage's own backends.

    python benchmarks/flow_backends.py [--sizes 96x144 320x568] [--repeats 5] [--threads 2]
        [--models flownets] [--device auto]

ptlflow models get random weights (saved to a temporary checkpoint and loaded through the
backend, exactly as a user's file would be): timing does not depend on the weights. Prints the
median milliseconds per pair and the ratio to DIS medium. Batches of ``flow.batch_size`` (4) pairs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _pairs(h: int, w: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 256, (h + 8, w + 8, 3)).astype(np.uint8), (0, 0), 2)
    first = np.stack([big[4:4 + h, 4:4 + w]] * n)
    second = np.stack([big[6:6 + h, 3:3 + w]] * n)
    return first, second


def _time(backend, first, second, repeats: int) -> float:
    backend(first[:1], second[:1])  # warm-up: allocations, cuDNN autotuning, DIS pyramids
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend(first, second)
        times.append((time.perf_counter() - t0) / len(first))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["96x144", "320x568"],
                        help="HxW: the embedded synthetic default and an A2D clip")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=["flownets"], help="ptlflow models")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    cv2.setNumThreads(args.threads)
    from pipeline.flow.dis import PRESETS, DISFlow

    backends: list[tuple[str, object]] = [(f"dis-{p}", DISFlow(p)) for p in PRESETS]
    tmp = tempfile.TemporaryDirectory()
    if args.models:
        import ptlflow
        import torch

        from pipeline.flow.ptlflow_backend import PtlflowFlow

        torch.set_num_threads(args.threads)
        for name in args.models:
            ckpt = Path(tmp.name) / f"{name}.ckpt"
            torch.save({"state_dict": ptlflow.get_model(name).state_dict()}, ckpt)
            b = PtlflowFlow(name, str(ckpt), args.device, args.batch_size)
            backends.append((f"{name} ({b.device})", b))
    print(f"threads={args.threads} repeats={args.repeats} batch={args.batch_size}")
    print(f"{'size':>9} {'backend':>22} {'ms/pair':>9} {'x dis-medium':>13}")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        first, second = _pairs(h, w, args.batch_size)
        results = {label: _time(b, first, second, args.repeats) for label, b in backends}
        ref = results.get("dis-medium", next(iter(results.values())))
        for label, sec in results.items():
            print(f"{size:>9} {label:>22} {1000 * sec:9.2f} {sec / ref:13.2f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
