"""Stage ``train_segmenter``: train the instance segmenter on the train split, test it on the test split.

Dang et al. (2018, 3.1) fine-tune their instance segmenter on A2D itself rather than use a COCO
model, because a generic model proposes irrelevant background objects (their Table 3). This
stage does that with Mask R-CNN (:mod:`pipeline.masks.segmenter`): train-split frames only, an
explicit SGD loop with linear warm-up and step decay, a resumable checkpoint every
``segmenter.checkpoint_every`` steps, then mask AP and mean best IoU on the test split.

    python -m pipeline.masks.train --index results/index/frames.csv --release DIR \\
        --frames-dir results/frames --out results/segmenter/model.pt [--config config.yaml]

Writes ``model.pt`` (:func:`pipeline.masks.weights.save_model`), ``metrics.json`` and
``losses.csv`` beside it (paths configurable), and keeps ``checkpoints/last.pt`` there: a run
that is killed continues from it when started again with the same config and data.

Under ``torchrun --nproc_per_node N`` it trains on N GPUs (:mod:`pipeline.distributed`, the same
rules as the shared engine :class:`pipeline.region.engine.Trainer`): ``segmenter.batch_size`` is
the global batch, each rank trains on its share of it in ``DistributedDataParallel``, the
logged losses are averaged over the ranks, a NaN on any rank stops them all, and rank 0 alone
writes the checkpoints, the model, the losses and evaluates on the test split. Mask R-CNN samples
anchors and RoIs at random per image, so N processes do not repeat one process's numbers
exactly (the sampling differs), only its semantics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import distributed
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.index import read_index
from pipeline.masks.ap import MaskEvaluator
from pipeline.masks.config import SegmenterConfig
from pipeline.masks.dataset import FrameRef, InstanceFrames, collate, frame_refs, step_batches
from pipeline.masks.inference import outputs_to_regions, resolve_device, set_postprocessing
from pipeline.masks.segmenter import build_segmenter
from pipeline.masks.weights import load_file, load_state, resolve_weights, save_model
from pipeline.provenance import config_json, file_sha256

log = logging.getLogger("pipeline.masks.train")
LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
              "loss_rpn_box_reg")
HISTORY_COLUMNS = ("step", "lr", "loss") + LOSS_TERMS
# COCO's evaluation settings: keep detections down to score 0.05, at most 100 per image, so AP
# sees the whole precision-recall curve (the masks stage applies its own threshold and top-N).
EVAL_SCORE_THRESHOLD = 0.05
EVAL_DETECTIONS = 100


def lr_at(step: int, cfg: SegmenterConfig) -> float:
    """Learning rate of 0-based ``step``: linear warm-up from lr/1000, then step decay."""
    lr = cfg.lr * cfg.lr_decay_factor ** sum(step >= f * cfg.iterations for f in cfg.lr_decay_at)
    if step < cfg.warmup_iterations:
        alpha = step / cfg.warmup_iterations
        lr *= 1e-3 * (1 - alpha) + alpha
    return lr


def build_training_model(cfg: SegmenterConfig) -> tuple[nn.Module, str]:
    """The network to train, initialised from ``weights`` or ``backbone_weights`` if given.

    Returns:
        (model, a description of the initialisation for logs and provenance).
    """
    model = build_segmenter(**cfg.arch())
    if cfg.weights:
        state, name = resolve_weights(cfg.weights)
        dropped = load_state(model, state, name, drop_class_heads=True)
        return model, f"detector weights {name} (re-initialised: {sorted(dropped) or 'none'})"
    if cfg.backbone_weights:
        state, name = resolve_weights(cfg.backbone_weights)
        load_state(model.backbone.body, state, name, ignore_prefixes=("fc.",))
        return model, f"backbone weights {name}"
    return model, "random (no pretrained weights)"


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: list[torch.Tensor],
               targets: list[dict[str, torch.Tensor]], step: int, refs: list[FrameRef],
               loss_scale: float = 1.0) -> dict[str, float]:
    """One SGD step on a batch (this rank's share of it under torchrun, ``model`` in DDP, its
    loss scaled by ``loss_scale``: :func:`pipeline.distributed.loss_scale`). Returns the loss
    terms and their sum as floats (averaged over the ranks).

    Raises:
        FloatingPointError: the loss is NaN or infinite (on any rank); the message names the
            step and the frames of the batch, and no update is applied.
    """
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    values = {k: float(v.detach()) for k, v in losses.items()}
    finite = math.isfinite(float(total.detach()))
    bad = distributed.ranks_where(not finite)  # every rank stops if one sees a NaN
    if bad and not finite:
        frames = ", ".join(str(r) for r in refs)
        raise FloatingPointError(f"non-finite loss at step {step} (batch: {frames}): {values}; "
                                 "lower segmenter.lr or check these frames")
    if bad:
        raise FloatingPointError(f"non-finite loss at step {step} on rank(s) {bad}")
    optimizer.zero_grad(set_to_none=True)
    (total * loss_scale).backward()
    optimizer.step()
    return distributed.all_reduce_mean({"loss": float(total.detach()), **values},
                                       weight=len(images))


def _fingerprint(cfg: SegmenterConfig, refs: list[FrameRef]) -> str:
    """What a checkpoint must match to be resumed: the config and the training frames."""
    frames = [(r.video, r.frame) for r in refs]
    return hashlib.sha256((config_json(cfg) + json.dumps(frames)).encode()).hexdigest()[:16]


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: list[list[float]], fingerprint: str, seconds: float) -> None:
    """Everything needed to continue exactly: weights, momentum buffers, RNG, loss history.
    Under torchrun every rank calls it (each rank's RNG states are gathered); rank 0 writes."""
    rngs = distributed.gather_objects(
        (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available()
         else None))
    if not distributed.is_main():
        return
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "history": torch.tensor(history, dtype=torch.float64).reshape(-1, len(HISTORY_COLUMNS)),
             "fingerprint": fingerprint, "rng": rngs[0][0], "seconds": seconds,
             "rng_ranks": [r for r, _ in rngs]}
    if rngs[0][1] is not None:
        state["cuda_rng"], state["cuda_rng_ranks"] = rngs[0][1], [c for _, c in rngs]
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            fingerprint: str) -> tuple[int, list[list[float]], float]:
    """Load ``path`` into model and optimizer if it belongs to this run; return (step, history,
    seconds), or (0, [], 0) for a fresh start."""
    if not path.is_file():
        return 0, [], 0.0
    ckpt = load_file(path)
    if ckpt.get("fingerprint") != fingerprint:
        log.warning("%s belongs to another config or training set: starting over", path)
        return 0, [], 0.0
    load_state(model, ckpt["model"], path)
    optimizer.load_state_dict(ckpt["optimizer"])
    # each rank its own RNG states when the world size is the one that wrote them
    rank = distributed.rank() if len(ckpt.get("rng_ranks", [])) == distributed.world_size() else 0
    torch.set_rng_state(ckpt["rng_ranks"][rank] if "rng_ranks" in ckpt else ckpt["rng"])
    if "cuda_rng" in ckpt and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng_ranks"][rank] if "cuda_rng_ranks" in ckpt
                                     else ckpt["cuda_rng"])
    log.info("resuming from %s at step %d", path, ckpt["step"])
    return int(ckpt["step"]), ckpt["history"].tolist(), float(ckpt["seconds"])


def write_losses(path: str | Path, history: list[list[float]]) -> None:
    """The loss history as CSV, one row per step (``step`` is 1-based: steps done)."""
    lines = [",".join(HISTORY_COLUMNS)]
    lines += [",".join([str(int(row[0]))] + [f"{v:.6g}" for v in row[1:]]) for row in history]
    write_text_atomic(path, "\n".join(lines) + "\n")


@torch.no_grad()
def evaluate(model: nn.Module, refs: list[FrameRef], device: torch.device,
             batch_size: int = 2) -> dict[str, Any]:
    """Mask AP (per actor class and class-agnostic) and mean best IoU on ``refs``."""
    data = InstanceFrames(refs)
    per_class, agnostic = MaskEvaluator(), MaskEvaluator(class_agnostic=True)
    set_postprocessing(model, EVAL_SCORE_THRESHOLD, EVAL_DETECTIONS)
    model.eval()
    for start in range(0, len(refs), batch_size):
        images, targets, _ = collate([data[(i, False)] for i in
                                      range(start, min(start + batch_size, len(refs)))])
        outputs = model([im.to(device) for im in images])
        for out, im, tgt in zip(outputs, images, targets):
            reg = outputs_to_regions(out, tuple(im.shape[1:]))
            gt = tgt["masks"].numpy().astype(bool)
            for ev in (per_class, agnostic):
                ev.add(reg.binary(), reg.scores, reg.labels, gt, tgt["labels"].numpy())
    metrics = per_class.compute()
    flat = agnostic.compute()
    metrics["ap_class_agnostic"], metrics["ap50_class_agnostic"] = flat["ap"], flat["ap50"]
    return metrics


def train_segmenter(cfg: SegmenterConfig, *, index: Path, release: Path, frames_dir: Path,
                    out: Path, metrics_path: Path, losses_path: Path,
                    checkpoint_dir: Path, stop_after: int | None = None) -> dict[str, Any] | None:
    """Train (resuming if possible), save the model, evaluate it on the test split.

    Returns:
        The metrics written, or None when ``stop_after`` stopped training early (a checkpoint is
        saved; nothing else is written) and on ranks other than 0 under torchrun.
    """
    table = read_index(index)
    train_refs = frame_refs(table, release, frames_dir, split="train")
    test_refs = frame_refs(table, release, frames_dir, split="test")
    if not train_refs:
        raise DataError(index, "no train-split frames to train the segmenter on")
    device = distributed.local_device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    model, init = build_training_model(cfg)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    fingerprint = _fingerprint(cfg, train_refs)
    last = checkpoint_dir / "last.pt"
    step, history, seconds = _resume(last, model, optimizer, fingerprint)
    if step == 0 and distributed.rank() > 0:  # distinct RoI sampling per rank; rank 0 as alone
        torch.manual_seed(cfg.seed + distributed.rank())
    net = distributed.wrap(model, device)  # DDP under torchrun (parameters already frozen)
    stop = cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)
    log.info("segmenter ResNet-%d FPN (%s), init: %s; %d train / %d test frames; device %s; "
             "steps %d..%d of %d", cfg.depth, cfg.norm, init, len(train_refs), len(test_refs),
             device, step, stop, cfg.iterations)
    data = InstanceFrames(train_refs)
    batches = [distributed.shard(b) for b in
               step_batches(len(data), cfg.batch_size, cfg.seed, step, stop, cfg.hflip)]
    # Its own generator: a DataLoader seeds its workers from the global RNG otherwise, which
    # would shift the RoI sampling of a resumed run away from the uninterrupted one.
    loader = torch.utils.data.DataLoader(data, batch_sampler=batches, collate_fn=collate,
                                         num_workers=cfg.num_workers,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    tic = time.perf_counter()
    for images, targets, refs in loader:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        values = train_step(net, optimizer, [im.to(device) for im in images],
                            [{k: v.to(device) for k, v in t.items()} for t in targets], step, refs,
                            distributed.loss_scale(cfg.batch_size))
        step += 1
        history.append([step, lr_at(step - 1, cfg), values["loss"]]
                       + [values.get(k, 0.0) for k in LOSS_TERMS])
        if (step % cfg.log_every == 0 or step == stop) and distributed.is_main():
            log.info("step %d/%d lr %.2e loss %.4f (%s)", step, cfg.iterations,
                     lr_at(step - 1, cfg), values["loss"],
                     " ".join(f"{k[5:]} {values.get(k, 0.0):.3f}" for k in LOSS_TERMS))
        if step % cfg.checkpoint_every == 0 or step == stop:
            elapsed = seconds + time.perf_counter() - tic
            save_checkpoint(last, model, optimizer, step, history, fingerprint, elapsed)
            if distributed.is_main():
                write_losses(checkpoint_dir / "losses.csv", history)  # progress while training
    seconds += time.perf_counter() - tic
    if not distributed.is_main():  # one writer under torchrun
        return None
    if step < cfg.iterations:
        log.info("stopped after step %d of %d; run again to continue from %s", step,
                 cfg.iterations, last)
        return None
    save_model(out, model, cfg.arch(), {"iterations": cfg.iterations, "config_json":
                                        config_json(cfg), "init": init,
                                        "train_frames": len(train_refs),
                                        "train_seconds": round(seconds, 1)})
    write_losses(losses_path, history)
    log.info("trained in %.1f s; wrote %s", seconds, out)
    if test_refs:
        metrics = evaluate(model, test_refs, device, cfg.batch_size)
    else:
        log.warning("%s: no test-split frames: no mask AP", index)
        metrics = {"ap": None, "ap50": None}
    metrics.update({"split": "test", "model": str(out), "model_sha256": file_sha256(out),
                    "train_frames": len(train_refs), "iterations": cfg.iterations,
                    "train_seconds": round(seconds, 1), "device": str(device)})
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")
    log.info("test split: mask AP %s, AP50 %s, class-agnostic AP50 %s, mean best IoU %s "
             "(%d frames, %d GT instances)", _pct(metrics["ap"]), _pct(metrics["ap50"]),
             _pct(metrics.get("ap50_class_agnostic")), _pct(metrics.get("mean_best_iou")),
             metrics.get("n_frames", 0), metrics.get("n_gt", 0))
    return metrics


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.masks.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV")
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder")
    parser.add_argument("--frames-dir", type=Path, required=True,
                        help="folder of the frames caches {video}.h5")
    parser.add_argument("--out", type=Path, required=True, help="model file to write (model.pt)")
    parser.add_argument("--metrics", type=Path, help="test metrics JSON (default: beside --out)")
    parser.add_argument("--losses", type=Path, help="loss CSV (default: beside --out)")
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="training checkpoints (default: checkpoints/ beside --out)")
    parser.add_argument("--stop-after", type=int, metavar="STEP",
                        help="checkpoint and stop after STEP steps without writing the model "
                             "(to split training over several jobs); run again to continue")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (the rule passes its threads:)")
    add_config_args(parser, "segmenter")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:  # the job's threads, shared by torchrun's processes
        torch.set_num_threads(max(1, args.threads // distributed.launch_env().world_size))
    cfg = config_from_args(args, SegmenterConfig, "segmenter")
    folder = args.out.parent
    try:
        with distributed.session(resolve_device(cfg.device)):
            train_segmenter(cfg, index=args.index, release=args.release,
                            frames_dir=args.frames_dir, out=args.out,
                            metrics_path=args.metrics or folder / "metrics.json",
                            losses_path=args.losses or folder / "losses.csv",
                            checkpoint_dir=args.checkpoint_dir or folder / "checkpoints",
                            stop_after=args.stop_after)
    except (DataError, FloatingPointError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
