"""Region-to-pixel layer: vectorised (chunked arg-max + gather) vs the per-region loop reference.

Times forward and forward+backward at A2D sizes, both implementations interleaved in the same
run, and reports medians and ratios; also the bytes autograd keeps for the backward pass.

    OMP_NUM_THREADS=1 python benchmarks/region_to_pixel.py [--regions 30] [--repeats 7]
        [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from pipeline.models.region_to_pixel import region_to_pixel, region_to_pixel_reference

IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "vectorised": region_to_pixel,
    "reference": region_to_pixel_reference,
}


def _inputs(n: int, k: int, size: tuple[int, int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, generator=g)
    # Box-shaped soft masks like pasted instance masks: zero outside a random box.
    masks = torch.zeros(n, *size)
    h, w = size
    for mask in masks:
        y1, x1 = (torch.randint(0, h // 2, (1,), generator=g).item(),
                  torch.randint(0, w // 2, (1,), generator=g).item())
        y2, x2 = y1 + h // 3, x1 + w // 3
        mask[y1:y2, x1:x2] = torch.rand(y2 - y1, x2 - x1, generator=g)
    masks[-1] = 1.0  # the context region
    return scores, masks


def _saved_bytes(fn, scores, masks) -> int:
    """Bytes of the distinct tensors autograd saves for backward."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(scores.clone().requires_grad_(), masks)
    return sum(seen.values())


def _time(fn, scores, masks, backward: bool) -> float:
    s = scores.clone().requires_grad_(backward)
    _sync(s.device)
    start = time.perf_counter()
    y = fn(s, masks)
    if backward:
        y.sum().backward()
    _sync(s.device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=30, help="N, context region included")
    parser.add_argument("--classes", type=int, default=10, help="K (10 = action head)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
          f"N={args.regions}, K={args.classes}, median of {args.repeats} interleaved runs")
    print(f"{'output':>10} {'pass':>13} {'vectorised ms':>14} {'reference ms':>13} "
          f"{'ref/vec':>8} {'saved MB vec':>13} {'saved MB ref':>13}")
    for size in ((40, 71), (320, 568)):
        scores, masks = (t.to(device) for t in _inputs(args.regions, args.classes, size))
        torch.testing.assert_close(region_to_pixel(scores, masks),
                                   region_to_pixel_reference(scores, masks))
        saved = {name: _saved_bytes(fn, scores, masks) / 2**20
                 for name, fn in IMPLEMENTATIONS.items()}
        for backward in (False, True):
            times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
            for name, fn in IMPLEMENTATIONS.items():  # warm-up
                _time(fn, scores, masks, backward)
            for _ in range(args.repeats):
                for name, fn in IMPLEMENTATIONS.items():
                    times[name].append(_time(fn, scores, masks, backward))
            vec, ref = (statistics.median(times[n]) * 1e3 for n in ("vectorised", "reference"))
            label = "fwd+bwd" if backward else "fwd no-grad"
            print(f"{size[0]:>4}x{size[1]:<5} {label:>13} {vec:>14.2f} {ref:>13.2f} "
                  f"{ref / vec:>8.2f} {saved['vectorised']:>13.1f} {saved['reference']:>13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
