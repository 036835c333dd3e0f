"""Stage-1 training step of the Dang et al. baseline at front-end output stride 8 vs 16.

One SGD step (forward, Eq. 1 loss, backward, update) of the two-stream (or RGB-only) front-end
+ ASPP baseline, both strides interleaved in the same run so machine load hits them alike;
prints medians and the ratio, and the float16 feature-cache bytes per frame at each stride.

    python benchmarks/output_stride.py [--depth 18] [--size 96 128] [--batch 4] [--repeats 7]
        [--reduce-to 64] [--rgb-only] [--device cuda]

Defaults are the embedded config's (ResNet-18 streams, 96 x 128 inputs, batch 4).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from machine import machine_facts  # benchmarks/machine.py
from pipeline.models.baseline import build_baseline
from pipeline.models.losses import SegmentationLoss
from pipeline.region.feature_cache import bytes_per_frame

STRIDES = (8, 16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reduce-to", type=int, default=64)
    parser.add_argument("--rgb-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(machine_facts(f", torch {torch.__version__}, device {device}"))

    torch.manual_seed(0)
    h, w = args.size
    rgb = torch.rand(args.batch, 3, h, w, device=device)
    flow = None if args.rgb_only else torch.rand(args.batch, 3, h, w, device=device)
    labels = {"actor": torch.randint(0, 8, (args.batch, h, w), device=device),
              "action": torch.randint(0, 10, (args.batch, h, w), device=device)}
    criterion = SegmentationLoss()
    models, optimizers = {}, {}
    for s in STRIDES:
        models[s] = build_baseline(args.depth, two_stream=not args.rgb_only,
                                   reduce_to=args.reduce_to, output_stride=s).to(device).train()
        optimizers[s] = torch.optim.SGD(models[s].parameters(), lr=1e-3, momentum=0.9)

    def step(s: int) -> float:
        _sync(device)
        start = time.perf_counter()
        out = models[s](rgb, flow)
        terms = criterion(out, labels)
        loss = sum(terms.values())
        optimizers[s].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[s].step()
        _sync(device)
        return time.perf_counter() - start

    for s in STRIDES:  # warm-up (allocator, kernels)
        step(s)
    times: dict[int, list[float]] = {s: [] for s in STRIDES}
    for _ in range(args.repeats):
        for s in STRIDES:
            times[s].append(step(s))

    channels = models[8].frontend.out_channels
    streams = "RGB" if args.rgb_only else "RGB + flow"
    print(f"\nResNet-{args.depth} {streams}, {channels} fused channels, batch {args.batch}, "
          f"{h} x {w}, {args.repeats} repeats (median)")
    print("| output stride | train step (s) | feature map | cache bytes / frame |")
    print("|---:|---:|---|---:|")
    for s in STRIDES:
        fh, fw = -(-h // s), -(-w // s)
        print(f"| {s} | {statistics.median(times[s]):.3f} | {fh} x {fw} | "
              f"{bytes_per_frame(channels, h, w, s):,} |")
    ratio = statistics.median(times[8]) / statistics.median(times[16])
    print(f"\nstride 8 / stride 16 step time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
