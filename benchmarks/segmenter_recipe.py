"""Segmenter training step and inference at torchvision's widths vs the CPU recipe's.

One SGD step (forward, Mask R-CNN losses, backward, update) and one inference pass of the
segmenter (``pipeline.masks.segmenter.build_segmenter``) at FPN / box-head widths 256 / 1024
(torchvision, config/a2d.yaml) and 64 / 256 (the embedded default), interleaved in the same run
so that machine load hits them alike; prints medians and ratios.

    OMP_NUM_THREADS=1 python benchmarks/segmenter_recipe.py [--depth 18] [--size 96 128]
        [--batch 2] [--repeats 7] [--device cuda]

Defaults are the embedded config's (ResNet-18 GroupNorm, 96 x 128 frames, batch 2, 32 RoIs per
image, 64-channel mask head). Images are random with two random instances each: the cost of a
step does not depend on what the pixels show (proposal counts are fixed by the RPN settings).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from machine import machine_facts  # benchmarks/machine.py
from pipeline.masks.segmenter import build_segmenter

#: (name, fpn_channels, representation_size)
RECIPES = (("torchvision 256 / 1024", 256, 1024), ("CPU recipe 64 / 256", 64, 256))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _targets(batch: int, h: int, w: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batch):
        boxes, masks = [], []
        for _ in range(2):
            bw, bh = int(torch.randint(16, w // 2, (1,), generator=g)), int(
                torch.randint(16, h // 2, (1,), generator=g))
            x0, y0 = int(torch.randint(0, w - bw, (1,), generator=g)), int(
                torch.randint(0, h - bh, (1,), generator=g))
            boxes.append([x0, y0, x0 + bw, y0 + bh])
            m = torch.zeros(h, w, dtype=torch.uint8)
            m[y0:y0 + bh, x0:x0 + bw] = 1
            masks.append(m)
        out.append({"boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                    "labels": torch.randint(1, 8, (2,), generator=g).to(device),
                    "masks": torch.stack(masks).to(device)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(machine_facts(f", torch {torch.__version__}, device {device}"))
    h, w = args.size
    torch.manual_seed(0)
    images = [torch.rand(3, h, w, device=device) for _ in range(args.batch)]
    targets = _targets(args.batch, h, w, device)
    models, optimizers = {}, {}
    for name, fpn, rep in RECIPES:
        models[name] = build_segmenter(depth=args.depth, norm="gn", min_size=h, max_size=2 * w,
                                       anchor_sizes=(16, 32, 64, 128, 256), rois_per_image=32,
                                       mask_head_channels=64, fpn_channels=fpn,
                                       representation_size=rep).to(device)
        optimizers[name] = torch.optim.SGD(models[name].parameters(), lr=1e-3, momentum=0.9)

    def train_step(name: str) -> float:
        model = models[name].train()
        _sync(device)
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()
        _sync(device)
        return time.perf_counter() - start

    @torch.no_grad()
    def infer(name: str) -> float:
        model = models[name].eval()
        _sync(device)
        start = time.perf_counter()
        model(images)
        _sync(device)
        return time.perf_counter() - start

    for name, _, _ in RECIPES:  # warm-up (allocator, kernels)
        train_step(name)
        infer(name)
    times = {(name, kind): [] for name, _, _ in RECIPES for kind in ("train", "infer")}
    for _ in range(args.repeats):
        for name, _, _ in RECIPES:
            times[(name, "train")].append(train_step(name))
            times[(name, "infer")].append(infer(name))

    print(f"\nResNet-{args.depth} GroupNorm FPN, batch {args.batch}, {h} x {w}, "
          f"{args.repeats} repeats (median)")
    print("| FPN / box head | train step (s) | inference (s) |")
    print("|---|---:|---:|")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, _, _ in RECIPES:
        print(f"| {name} | {med[(name, 'train')]:.3f} | {med[(name, 'infer')]:.3f} |")
    (a, _, _), (b, _, _) = RECIPES
    print(f"\n{a} / {b}: train step {med[(a, 'train')] / med[(b, 'train')]:.2f}x, "
          f"inference {med[(a, 'infer')] / med[(b, 'infer')]:.2f}x")


if __name__ == "__main__":
    main()
