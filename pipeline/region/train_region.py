"""Stage ``train_region``: training stage 2 of Dang et al. (section 3.4), the region back-end.

The front-end is fixed: its fused features come from the feature cache (stage ``features``).
Only the region back-end learns (region pooling, FC layers, region-to-pixel; Fig. 2c), with Eq. 1
on the pixel scores of Eq. 2-3, on every annotated train frame. Each frame's regions are the
union of the masks of the training sources: generated masks plus the GT actor masks ("as
suggested by [..], additionally we use ground truth actor region masks during the training",
section 4, Table 3).

    python -m pipeline.region.train_region --release DIR --index results/index/frames.csv \\
        --features-dir results/region_model/rgbflow/features --masks-root results/masks \\
        --train-sources gt+model --out results/region_model/rgbflow/stage2_gt+model.pt \\
        [--config-json JSON | --config FILE]

``--train-sources`` defaults to ``stage2.train_sources``. Loss curves and the resume state are
written beside ``--out`` as in stage 1; several GPUs through torchrun as in stage 1, too.
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
from pipeline.region.build import build_stage2_model, save_checkpoint, stage2_loss
from pipeline.region.config import MASK_SOURCES, RegionConfig, resolve_device
from pipeline.region.data import RegionFrames, collate, describe_batch, frame_records
from pipeline.region.feature_cache import read_feature_cache
from pipeline.region.train_baseline import side_paths
from pipeline.training import determinism
from pipeline.training.curves import curve_writer
from pipeline.training.engine import RunSpec, Trainer

log = logging.getLogger("pipeline.region.train_region")
STAGE = "stage2"


def parse_sources(text: str) -> tuple[str, ...]:
    """``"gt+model"`` -> ``("gt", "model")`` (sorted, unique, each a known mask source)."""
    sources = tuple(sorted(set(filter(None, text.split("+")))))
    bad = [s for s in sources if s not in MASK_SOURCES]
    if not sources or bad:
        raise ValueError(f"mask sources must be '+'-joined names of {MASK_SOURCES}, got {text!r}")
    return sources


def train_stage2(cfg: RegionConfig, *, release: str | Path, index: str | Path,
                 features_dir: str | Path, masks_root: str | Path, out: str | Path,
                 train_sources: tuple[str, ...] | None = None, on_step=None
                 ) -> dict[str, list[float]]:
    """Train the region back-end on the train split and write ``out``; returns the history."""
    sources = tuple(sorted(train_sources or cfg.stage2.train_sources))
    out = Path(out)
    device = distributed.local_device(resolve_device(cfg.device))
    records = frame_records(read_index(index), release, split="train")
    if not records:
        raise DataError(index, "no annotated frames in the train split")
    dataset = RegionFrames(records, cfg.input_size, features_dir=features_dir,
                           mask_dirs=[Path(masks_root) / s for s in sources],
                           min_mask_score=cfg.stage2.min_mask_score,
                           combine=cfg.stage2.combine_sources)
    first = read_feature_cache(Path(features_dir) / f"{records[0].video}.h5")
    if first.input_size != tuple(cfg.input_size):
        raise DataError(first.path, f"features were computed at input size {first.input_size}, "
                                    f"config says {tuple(cfg.input_size)}")
    stage1_sha = {read_feature_cache(Path(features_dir) / f"{v}.h5").stage1_sha256
                  for v in {r.video for r in records}}
    if len(stage1_sha) != 1:
        raise DataError(features_dir, "feature caches come from different stage-1 checkpoints")
    torch.manual_seed(cfg.seed)
    model = build_stage2_model(cfg, first.channels).to(device)
    s2 = cfg.stage2
    optimizer = torch.optim.SGD(model.parameters(), lr=s2.lr, momentum=s2.momentum,
                                weight_decay=s2.weight_decay)
    spec = RunSpec(iterations=s2.iterations, batch_size=s2.batch_size,
                   checkpoint_every=s2.checkpoint_every, lr_policy=s2.lr_policy, seed=cfg.seed,
                   device=device, amp=cfg.amp, num_workers=cfg.num_workers,
                   accumulate=s2.accumulate)
    paths = side_paths(out)
    loss_fn = stage2_loss(SegmentationLoss(), tuple(cfg.input_size), first.stride,
                          cfg.region_head.output_stride)
    trainer = Trainer(model, loss_fn, dataset, optimizer, spec, state_path=paths["resume"],
                      config_sha256=config_hash({"cfg": cfg, "sources": sources,
                                                 "stage1": sorted(stage1_sha),
                                                 "n": len(records)}),
                      collate=collate, describe=describe_batch,
                      curves=curve_writer(paths["csv"], paths["png"],
                                          f"stage 2 (region, {first.streams}, masks "
                                          f"{'+'.join(sources)})"))
    log.info("stage 2 (%s, masks %s): %d train frames, %d steps x %d on %s", first.streams,
             "+".join(sources), len(records), s2.iterations, s2.batch_size, device)
    history = trainer.fit(on_step)
    if distributed.is_main():
        save_checkpoint(out, model.cpu(), cfg, stage=STAGE, streams=first.streams,
                        train_sources="+".join(sources), stage1_sha256=stage1_sha.pop(),
                        in_channels=first.channels, stride=first.stride, steps=trainer.step,
                        train_frames=len(records), final_loss=history["loss"][-1])
    trainer.finish()
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.region.train_region",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder")
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV (stage index)")
    parser.add_argument("--features-dir", type=Path, required=True,
                        help="folder of feature caches (stage features)")
    parser.add_argument("--masks-root", type=Path, required=True,
                        help="folder holding one masks folder per source (results/masks)")
    parser.add_argument("--train-sources", type=parse_sources,
                        help="'+'-joined mask sources, e.g. gt+model (default: config)")
    parser.add_argument("--out", type=Path, required=True, help="stage-2 checkpoint to write")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads of the job (the rule passes its threads:)")
    add_config_args(parser, "region_model")
    args = parser.parse_args(argv)
    setup_logging()
    determinism.configure(args.threads)
    cfg = config_from_args(args, RegionConfig, "region_model")
    with distributed.session(resolve_device(cfg.device)):
        return run_stage(log, train_stage2, cfg, release=args.release, index=args.index,
                         features_dir=args.features_dir, masks_root=args.masks_root,
                         out=args.out, train_sources=args.train_sources)


if __name__ == "__main__":
    sys.exit(main())
