"""Segmenter training step vs the RPN's training proposal counts, from a trained segmenter.

The RPN keeps ``rpn_pre_nms_top_n`` proposals per FPN level before NMS and
``rpn_post_nms_top_n`` per image after it (torchvision: 2000 / 2000 in training); the box and
mask heads then sample ``rois_per_image`` of them. NMS cost depends on the scores, so an
untrained RPN (random scores, few boxes suppressed early) overstates what fewer proposals save:
this benchmark starts from a trained model on real frames, e.g. after ``make demo``:

    OMP_NUM_THREADS=1 python benchmarks/segmenter_rpn.py --weights results/segmenter/model.pt \\
        --index results/index/frames.csv --release results/synthetic/Release \\
        --frames-dir results/frames [--settings 2000/2000 1000/500 600/300] [--repeats 12]

Each setting runs the same train-split batches (SGD at lr 0, so the model does not move),
interleaved in rounds so that machine load hits them alike; prints median seconds per step and
the ratio to the first setting.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from machine import machine_facts  # benchmarks/machine.py
from pipeline.index import read_index
from pipeline.masks.dataset import InstanceFrames, collate, frame_refs
from pipeline.masks.segmenter import build_segmenter
from pipeline.masks.weights import load_file, state_dict_of


def _setting(text: str) -> tuple[int, int]:
    pre, post = text.split("/")
    return int(pre), int(post)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="a trained model.pt")
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--frames-dir", type=Path, required=True)
    parser.add_argument("--settings", nargs="+", default=["2000/2000", "1000/500", "600/300"],
                        help="training PRE/POST proposal counts; the first is the reference")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps per setting and round")
    parser.add_argument("--repeats", type=int, default=12, help="rounds (the first is warm-up)")
    args = parser.parse_args()
    print(machine_facts(f", torch {torch.__version__}, threads {torch.get_num_threads()}"))
    # not weights.load_segmenter: it builds for inference (trainable_layers 0), and a frozen
    # backbone would leave its backward pass out of the timed step
    obj = load_file(args.weights)
    model = build_segmenter(**dict(obj["arch"]))
    model.load_state_dict(state_dict_of(obj, args.weights))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    data = InstanceFrames(frame_refs(read_index(args.index), args.release, args.frames_dir,
                                     split="train"))
    settings = {s: _setting(s) for s in args.settings}
    times: dict[str, list[float]] = {s: [] for s in settings}
    for r in range(args.repeats):
        for name, (pre, post) in settings.items():
            model.rpn._pre_nms_top_n["training"] = pre
            model.rpn._post_nms_top_n["training"] = post
            start = time.perf_counter()
            for i in range(args.steps):
                first = (r * args.steps + i) * args.batch
                images, targets, _ = collate([data[((first + j) % len(data), False)]
                                              for j in range(args.batch)])
                loss = sum(model(images, targets).values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if r:  # round 0 warms up allocator and kernels
                times[name].append((time.perf_counter() - start) / args.steps)
    ref = statistics.median(times[args.settings[0]])
    print(f"\n{args.weights}, batch {args.batch}, {args.repeats - 1} rounds x {args.steps} "
          "steps (median)")
    print("| RPN proposals pre / post NMS (training) | train step (s) | ratio |")
    print("|---|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.3f} | {med / ref:.2f} |")


if __name__ == "__main__":
    main()
