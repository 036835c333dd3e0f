"""Stage ``train_baseline``: training stage 1 of Dang et al. (section 3.4), the DeepLab baseline.

The front-end (RGB-only or two-stream, ``--streams``) is trained with the light ASPP back-end of
Fig. 2b on every annotated frame of the train split, with Eq. 1 (actor + action pixel
cross-entropy), SGD and separate learning rates for front-end and back-end. The result is both
the Table 1 "Baseline" model and the front-end whose features stage 2 learns from.

    python -m pipeline.region.train_baseline --release DIR --index results/index/frames.csv \\
        --frames-dir results/frames [--flow-dir results/flow] --streams rgbflow \\
        --out results/region_model/rgbflow/stage1.pt [--config-json JSON | --config FILE]

Writes ``--out`` (weights + provenance, see :mod:`pipeline.region.build`), the loss curves
``<out stem>_loss.csv`` / ``.png`` beside it, and while training a resume state
``<out stem>.resume.pt`` every ``stage1.checkpoint_every`` steps: rerunning the same command
after a kill continues from it and ends with the same weights as an uninterrupted run (CPU).
Under ``torchrun --nproc_per_node N`` it trains on N GPUs (:mod:`pipeline.distributed`;
``stage1.batch_size`` is the global batch) and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from pipeline import distributed
from pipeline.cli import run_stage, setup_logging
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.index import read_index
from pipeline.models.losses import SegmentationLoss
from pipeline.provenance import config_hash
from pipeline.region.build import (
    build_stage1_model,
    save_checkpoint,
    set_stage1_train_mode,
    stage1_loss,
    stage1_param_groups,
)
from pipeline.region.config import STREAMS, RegionConfig, check_streams, resolve_device
from pipeline.region.data import RegionFrames, collate, describe_batch, frame_records
from pipeline.training import determinism
from pipeline.training.curves import curve_writer
from pipeline.training.engine import RunSpec, Trainer

log = logging.getLogger("pipeline.region.train_baseline")
STAGE = "stage1"


def side_paths(out: Path) -> dict[str, Path]:
    """Files written beside a checkpoint: loss curves and the resume state."""
    return {"csv": out.with_name(f"{out.stem}_loss.csv"),
            "png": out.with_name(f"{out.stem}_loss.png"),
            "resume": out.with_name(f"{out.stem}.resume.pt")}


def train_stage1(cfg: RegionConfig, *, release: str | Path, index: str | Path,
                 frames_dir: str | Path, flow_dir: str | Path | None, streams: str,
                 out: str | Path, on_step=None) -> dict[str, list[float]]:
    """Train stage 1 on the train split and write ``out``; returns the loss history."""
    streams = check_streams(streams)
    if streams == "rgbflow" and flow_dir is None:
        raise ValueError("streams 'rgbflow' needs flow_dir")
    out = Path(out)
    device = distributed.local_device(resolve_device(cfg.device))
    records = frame_records(read_index(index), release, split="train")
    if not records:
        raise DataError(index, "no annotated frames in the train split")
    dataset = RegionFrames(records, cfg.input_size, frames_dir=frames_dir,
                           flow_dir=flow_dir if streams == "rgbflow" else None,
                           flow_max_px=cfg.frontend.flow_max_px)
    torch.manual_seed(cfg.seed)
    model = build_stage1_model(cfg, streams).to(device)
    s1 = cfg.stage1
    set_stage1_train_mode(model, s1.freeze_bn)  # before the groups: frozen BN params drop out
    optimizer = torch.optim.SGD(stage1_param_groups(model, s1.lr_frontend, s1.lr_backend),
                                lr=s1.lr_backend, momentum=s1.momentum,
                                weight_decay=s1.weight_decay)
    spec = RunSpec(iterations=s1.iterations, batch_size=s1.batch_size,
                   checkpoint_every=s1.checkpoint_every, lr_policy=s1.lr_policy, seed=cfg.seed,
                   device=device, amp=cfg.amp, num_workers=cfg.num_workers,
                   accumulate=s1.accumulate)
    paths = side_paths(out)
    trainer = Trainer(model, stage1_loss(SegmentationLoss()), dataset, optimizer, spec,
                      state_path=paths["resume"],
                      config_sha256=config_hash({"cfg": cfg, "streams": streams,
                                                 "n": len(records)}),
                      collate=collate, describe=describe_batch,
                      train_mode=lambda m: set_stage1_train_mode(m, s1.freeze_bn),
                      curves=curve_writer(paths["csv"], paths["png"],
                                          f"stage 1 (baseline, {streams})"))
    log.info("stage 1 (%s): %d train frames of %d videos, %d steps x %d (%d micro-batches) on "
             "%s", streams, len(records), len({r.video for r in records}), s1.iterations,
             s1.batch_size, s1.accumulate, device)
    history = trainer.fit(on_step)
    if distributed.is_main():
        save_checkpoint(out, model.cpu(), cfg, stage=STAGE, streams=streams, steps=trainer.step,
                        train_frames=len(records), final_loss=history["loss"][-1])
    trainer.finish()
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.region.train_baseline",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder")
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV (stage index)")
    parser.add_argument("--frames-dir", type=Path, required=True, help="folder of frames caches")
    parser.add_argument("--flow-dir", type=Path, help="folder of flow caches (rgbflow only)")
    parser.add_argument("--streams", choices=STREAMS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="stage-1 checkpoint to write")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads of the job (the rule passes its threads:)")
    add_config_args(parser, "region_model")
    args = parser.parse_args(argv)
    setup_logging()
    determinism.configure(args.threads)
    cfg = config_from_args(args, RegionConfig, "region_model")
    with distributed.session(resolve_device(cfg.device)):
        return run_stage(log, train_stage1, cfg, release=args.release, index=args.index,
                         frames_dir=args.frames_dir, flow_dir=args.flow_dir,
                         streams=args.streams, out=args.out)


if __name__ == "__main__":
    sys.exit(main())
