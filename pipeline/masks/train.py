"""Stage ``train_segmenter``: train the instance segmenter on the train split, test it on the test split.

Dang et al. (2018, 3.1) fine-tune their instance segmenter on A2D itself rather than use a COCO
model, because a generic model proposes irrelevant background objects (their Table 3). This
stage does that with Mask R-CNN (:mod:`pipeline.masks.segmenter`): train-split frames only, the
shared training loop (:class:`pipeline.training.engine.Trainer`) with SGD, linear warm-up and
step decay, a resume state every ``segmenter.checkpoint_every`` steps and
``segmenter.accumulate`` micro-batches per step, then mask AP and mean best IoU on the test
split.

    python -m pipeline.masks.train --index results/index/frames.csv --release DIR \\
        --frames-dir results/frames --out results/segmenter/model.pt [--config config.yaml]

Writes ``model.pt`` (:func:`pipeline.masks.weights.save_model`), ``metrics.json`` and
``losses.csv`` beside it (paths configurable), and keeps ``checkpoints/last.pt`` there: a run
that is killed continues from it when started again with the same config and data.

Under ``torchrun --nproc_per_node N`` it trains on N GPUs (:mod:`pipeline.distributed`, through
the engine, as every training stage): ``segmenter.batch_size`` is
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
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import distributed
from pipeline.atomic import write_text_atomic
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.index import read_index
from pipeline.masks.ap import MaskEvaluator
from pipeline.masks.config import SegmenterConfig
from pipeline.masks.dataset import FrameRef, InstanceFrames, collate, frame_refs, step_batches
from pipeline.masks.inference import outputs_to_regions, resolve_device, set_postprocessing
from pipeline.masks.segmenter import build_segmenter
from pipeline.masks.weights import load_state, resolve_weights, save_model
from pipeline.provenance import config_json, file_sha256
from pipeline.training import determinism
from pipeline.training.engine import NonFiniteLoss, RunSpec, Trainer
from pipeline.training.schedule import lr_factor

log = logging.getLogger("pipeline.masks.train")
LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
              "loss_rpn_box_reg")
HISTORY_COLUMNS = ("step", "lr", "loss") + LOSS_TERMS
# COCO's evaluation settings: keep detections down to score 0.05, at most 100 per image, so AP
# sees the whole precision-recall curve (the masks stage applies its own threshold and top-N).
EVAL_SCORE_THRESHOLD = 0.05
EVAL_DETECTIONS = 100


def lr_at(step: int, cfg: SegmenterConfig) -> float:
    """Learning rate of 0-based ``step``: linear warm-up from lr/1000, then step decay (the
    engine's ``step`` policy, as the training loop applies it)."""
    return cfg.lr * lr_factor("multistep", step, cfg.iterations, decay_at=cfg.lr_decay_at,
                              decay_factor=cfg.lr_decay_factor, warmup=cfg.warmup_iterations)


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


def multi_scale(model: nn.Module, sizes: tuple[int, ...], min_size: int) -> None:
    """Train on short sides drawn from ``sizes`` and ``min_size``, one per image.

    torchvision's ``GeneralizedRCNNTransform`` draws a training image's size from its
    ``min_size`` tuple and resizes evaluation images to the tuple's last entry, so ``min_size``
    goes last: inference is unchanged (and a saved model is rebuilt with ``min_size`` alone).
    """
    model.transform.min_size = tuple(s for s in dict.fromkeys(sizes) if s != min_size) + (min_size,)


def _fingerprint(cfg: SegmenterConfig, refs: list[FrameRef]) -> str:
    """What a resume state must match to be resumed: the config and the training frames."""
    frames = [(r.video, r.frame) for r in refs]
    return hashlib.sha256((config_json(cfg) + json.dumps(frames)).encode()).hexdigest()[:16]


def segmenter_loss(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Engine loss function: Mask R-CNN's loss terms and their sum under ``"loss"``."""
    device = batch["images"][0].device
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
    losses = model(batch["images"], targets)
    zero = torch.zeros((), device=device)
    return {"loss": sum(losses.values()), **{k: losses.get(k, zero) for k in LOSS_TERMS}}


def _collate(items: list) -> dict[str, Any]:
    images, targets, refs = collate(items)
    return {"images": images, "targets": targets, "refs": refs}


def _describe(batch: dict[str, Any]) -> str:
    return ", ".join(str(r) for r in batch["refs"])


def history_rows(history: dict[str, list[float]]) -> list[list[float]]:
    """The engine's loss history as rows of :data:`HISTORY_COLUMNS`."""
    columns = [history.get(k, []) for k in ("step", "lr0", "loss", *LOSS_TERMS)]
    return [list(row) for row in zip(*columns)]


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
    multi_scale(model, cfg.train_sizes, cfg.min_size)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    spec = RunSpec(iterations=cfg.iterations, batch_size=cfg.batch_size,
                   checkpoint_every=cfg.checkpoint_every, lr_policy="multistep", seed=cfg.seed,
                   device=device, amp=False, num_workers=cfg.num_workers,
                   accumulate=cfg.accumulate, warmup_iterations=cfg.warmup_iterations,
                   lr_decay_at=tuple(cfg.lr_decay_at), lr_decay_factor=cfg.lr_decay_factor,
                   log_every=cfg.log_every)
    data = InstanceFrames(train_refs)
    progress = checkpoint_dir / "losses.csv"  # while training, beside the resume state
    trainer = Trainer(model, segmenter_loss, data, optimizer, spec,
                      state_path=checkpoint_dir / "last.pt",
                      config_sha256=_fingerprint(cfg, train_refs), collate=_collate,
                      describe=_describe,
                      batches=lambda start, stop: step_batches(len(data), cfg.batch_size,
                                                               cfg.seed, start, stop, cfg.hflip),
                      curves=lambda history: write_losses(progress, history_rows(history)))
    log.info("segmenter ResNet-%d FPN (%s), init: %s; %d train / %d test frames; device %s; "
             "%d steps x %d images (%d micro-batches)", cfg.depth, cfg.norm, init,
             len(train_refs), len(test_refs), device, cfg.iterations, cfg.batch_size,
             cfg.accumulate)
    try:
        history = trainer.fit(stop=stop_after)
    except NonFiniteLoss as exc:
        raise NonFiniteLoss(f"{exc}; lower segmenter.lr or check these frames") from None
    if trainer.step == cfg.iterations:
        trainer.save_state()  # kept: a rerun re-evaluates without training again
    seconds = trainer.seconds
    if not distributed.is_main():  # one writer under torchrun
        return None
    if trainer.step < cfg.iterations:
        log.info("stopped after step %d of %d; run again to continue from %s", trainer.step,
                 cfg.iterations, trainer.state_path)
        return None
    save_model(out, model, cfg.arch(), {"iterations": cfg.iterations, "config_json":
                                        config_json(cfg), "init": init,
                                        "train_frames": len(train_refs),
                                        "train_seconds": round(seconds, 1)})
    write_losses(losses_path, history_rows(history))
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
    determinism.configure(args.threads)  # the job's threads, shared by torchrun's processes
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
