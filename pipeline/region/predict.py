"""Stage ``predict``: joint actor-action label maps of one test video, baseline or region model.

- ``--model baseline --stage1 CKPT``: front-end + DeepLab heads on the frames (and flow);
- ``--model region --stage2 CKPT --features-dir DIR --masks-dir DIR``: the region back-end on
  the cached features of the stage-1 front-end it was trained on, with the region masks of one
  source (``results/masks/{model,checkpoint,gt}``: Dang et al. Table 3 test-time masks).

The joint label is the arg-max of the product of the actor and action probabilities over the
background and the 43 valid pairs (section 3.3; :func:`pipeline.models.joint.joint_labels`),
taken after resizing the logits to the clip's native size.

    python -m pipeline.region.predict --model region --index results/index/frames.csv \\
        --video=ID --stage2 results/region_model/rgbflow/stage2_gt+model.pt \\
        --features-dir results/region_model/rgbflow/features --masks-dir results/masks/model \\
        --out results/predictions/region_rgbflow_model/ID.h5 \\
        --png-dir results/predictions/region_rgbflow_model/png/ID

Several videos in one process (a shard job): repeat ``--video=ID --out PATH --png-dir DIR``.

Output (``docs/architecture.md``): ``labels`` (A, H, W) uint8 gzip, chunks (1, H, W) at the
clip's size and ``frame_ids`` (A,) int32, plus one A2D colour PNG per frame in ``--png-dir``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.a2d.annotations import write_col_png
from pipeline.cli import Once, add_video_args, run_videos, setup_logging, video_jobs
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.h5cache import create_cache
from pipeline.index import read_index
from pipeline.models.joint import joint_labels
from pipeline.provenance import file_sha256
from pipeline.region.build import (
    build_stage1_model,
    build_stage2_model,
    load_checkpoint,
    stage2_forward,
)
from pipeline.region.config import RegionConfig, resolve_device
from pipeline.region.data import RegionFrames, collate, frame_records
from pipeline.training.precision import autocast, autocast_dtype, to_device
from pipeline.region.feature_cache import read_feature_cache

log = logging.getLogger("pipeline.region.predict")
STAGE = "predict"
FORMAT_VERSION = 1
MODELS = ("baseline", "region")


def write_predictions(out: str | Path, png_dir: str | Path | None, *, video: str,
                      labels: list[np.ndarray], frame_ids: list[int], config: object,
                      source: str, **attrs: object) -> None:
    """Write the prediction cache (and the colour PNGs) of one video atomically."""
    if not labels:
        raise ValueError(f"{video}: no frames to write")
    h, w = labels[0].shape
    if any(lab.shape != (h, w) or lab.dtype != np.uint8 for lab in labels):
        raise ValueError(f"{video}: label maps differ in size or are not uint8")
    with create_cache(out, stage=STAGE, module="pipeline.region.predict", config=config,
                      format_version=FORMAT_VERSION, source=source, video=video,
                      **attrs) as f:
        ds = f.create_dataset("labels", shape=(len(labels), h, w), dtype=np.uint8,
                              chunks=(1, h, w), compression="gzip", compression_opts=4)
        for i, lab in enumerate(labels):
            ds[i] = lab
        f.create_dataset("frame_ids", data=np.asarray(frame_ids, np.int32))
    if png_dir is not None:
        png_dir = Path(png_dir)
        png_dir.mkdir(parents=True, exist_ok=True)
        for fid, lab in zip(frame_ids, labels):
            write_col_png(png_dir / f"{fid:05d}.png", lab)


@dataclass(frozen=True)
class Predictor:
    """A trained network ready to predict: what a job loads once for all its videos."""

    net: torch.nn.Module  # eval mode, on ``device``
    cfg: RegionConfig
    meta: dict
    device: torch.device
    checkpoint: Path
    checkpoint_sha256: str


def load_predictor(model: str, checkpoint: str | Path, device_name: str = "auto") -> Predictor:
    """The ``model`` ("baseline": a stage-1, "region": a stage-2 checkpoint) of ``checkpoint``."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    ckpt = Path(checkpoint)
    if model == "baseline":
        state, meta, cfg = load_checkpoint(ckpt, "stage1")
        net = build_stage1_model(cfg, meta["streams"])
    else:
        state, meta, cfg = load_checkpoint(ckpt, "stage2")
        net = build_stage2_model(cfg, int(meta["in_channels"]))
    net.load_state_dict(state)
    device = resolve_device(device_name)
    return Predictor(net.to(device).eval(), cfg, meta, device, ckpt, file_sha256(ckpt))


@torch.no_grad()
def predict_video(*, model: str, index: str | Path, video: str, out: str | Path,
                  png_dir: str | Path | None, stage1: str | Path | None = None,
                  frames_dir: str | Path | None = None, flow_dir: str | Path | None = None,
                  stage2: str | Path | None = None, features_dir: str | Path | None = None,
                  masks_dir: str | Path | None = None, device_name: str = "auto",
                  batch_size: int = 4, load: Callable[[], Predictor] | None = None) -> Path:
    """Predict every annotated frame of ``video`` and write ``out`` (and the PNGs).

    ``load``: the job's shared loader of the checkpoint (``pipeline.cli.Once(load_predictor,
    ...)``); without it the checkpoint (stage1 or stage2) is loaded here.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model == "baseline" and (stage1 is None or frames_dir is None):
        raise ValueError("the baseline needs stage1 and frames_dir")
    if model == "region" and (stage2 is None or features_dir is None or masks_dir is None):
        raise ValueError("the region model needs stage2, features_dir and masks_dir")
    loaded = load() if load is not None else \
        load_predictor(model, stage1 if model == "baseline" else stage2, device_name)
    net, cfg, meta, device = loaded.net, loaded.cfg, loaded.meta, loaded.device
    ckpt, streams = loaded.checkpoint, meta["streams"]
    records = frame_records(read_index(index), "", videos=[video])
    if not records:
        raise DataError(index, f"video {video!r} has no annotated frames in the index")
    if model == "baseline":
        if streams == "rgbflow" and flow_dir is None:
            raise ValueError("a two-stream baseline needs flow_dir")
        dataset = RegionFrames(records, cfg.input_size, frames_dir=frames_dir,
                               flow_dir=flow_dir if streams == "rgbflow" else None,
                               labels=False, flow_max_px=cfg.frontend.flow_max_px)
        source = f"baseline {streams}"
    else:
        cache = read_feature_cache(Path(features_dir) / f"{video}.h5")
        if cache.stage1_sha256 != meta["stage1_sha256"]:
            raise DataError(cache.path, "features come from another stage-1 checkpoint than the "
                                        f"one {ckpt} was trained on")
        dataset = RegionFrames(records, cfg.input_size, features_dir=features_dir,
                               mask_dirs=[masks_dir], labels=False,
                               min_mask_score=cfg.stage2.min_mask_score)
        source = f"region {streams}, masks {Path(masks_dir).name}"
    dtype = autocast_dtype(device, cfg.amp)
    labels: list[np.ndarray] = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        native = tuple(int(x) for x in batch["native_size"][0])
        batch = to_device(batch, device)
        with autocast(device, dtype):
            if model == "baseline":
                logits = net(batch["rgb"], batch.get("flow"))
            else:
                logits = stage2_forward(net, batch["features"], batch, tuple(cfg.input_size),
                                        int(meta["stride"]), cfg.region_head.output_stride)
        maps = joint_labels(logits["actor"].float(), logits["action"].float(), native,
                            cfg.joint_background)
        labels.extend(m for m in maps.cpu().numpy().astype(np.uint8))
    write_predictions(out, png_dir, video=video, labels=labels,
                      frame_ids=[r.frame for r in records], config=cfg, source=source,
                      model=model, streams=streams, checkpoint=str(ckpt),
                      checkpoint_sha256=loaded.checkpoint_sha256,
                      masks=str(masks_dir) if masks_dir is not None else "",
                      split=records[0].split)
    log.info("%s: %s predicted %d frames at %dx%d", video, source, len(labels), *labels[0].shape)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.region.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV (stage index)")
    parser.add_argument("--stage1", type=Path, help="stage-1 checkpoint (baseline)")
    parser.add_argument("--frames-dir", type=Path, help="folder of frames caches (baseline)")
    parser.add_argument("--flow-dir", type=Path, help="folder of flow caches (two-stream baseline)")
    parser.add_argument("--stage2", type=Path, help="stage-2 checkpoint (region)")
    parser.add_argument("--features-dir", type=Path, help="folder of feature caches (region)")
    parser.add_argument("--masks-dir", type=Path, help="folder of region masks caches (region)")
    # per video: --out (prediction cache .h5) and --png-dir (folder of A2D colour PNGs)
    add_video_args(parser, "out", "png_dir", required=("out",))
    add_config_args(parser, "region_model")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = config_from_args(args, RegionConfig, "region_model")
    return run_videos(log, predict_video, video_jobs(parser, args), model=args.model,
                      index=args.index, stage1=args.stage1, frames_dir=args.frames_dir,
                      flow_dir=args.flow_dir, stage2=args.stage2,
                      features_dir=args.features_dir, masks_dir=args.masks_dir,
                      device_name=cfg.device,
                      load=Once(load_predictor, args.model,
                                args.stage1 if args.model == "baseline" else args.stage2,
                                cfg.device))


if __name__ == "__main__":
    sys.exit(main())
