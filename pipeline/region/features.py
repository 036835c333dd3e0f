"""Stage ``features``: the frozen stage-1 front-end's fused features of every annotated frame.

Per video (train and test), one cache ``results/region_model/{streams}/features/{video}.h5``
(layout in :mod:`pipeline.region.feature_cache` and ``docs/architecture.md``): what stage 2
trains on (the front-end is fixed there, section 3.4) and what the region model predicts from.

    python -m pipeline.region.features --index results/index/frames.csv --video=ID \\
        --frames-dir results/frames [--flow-dir results/flow] --streams rgbflow \\
        --stage1 results/region_model/rgbflow/stage1.pt \\
        --out results/region_model/rgbflow/features/ID.h5

Several videos in one process (a shard job): repeat ``--video=ID --out PATH``.

The architecture and input size come from the checkpoint's own config (``--config`` only
supplies ``device``), so features always match the weights. Size on disk is
:func:`~pipeline.region.feature_cache.bytes_per_frame`: 22.2 MiB per frame for the paper's two
ResNet-101 streams at 320 x 568, so 277 GB (258 GiB) for A2D's 11,926 annotated frames; set
``frontend.reduce_to`` (e.g. 256 per stream: 2.8 MiB per frame) to make it practical.
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

from pipeline.cli import Once, add_video_args, run_videos, setup_logging, video_jobs
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.index import read_index
from pipeline.provenance import file_sha256
from pipeline.region.build import build_stage1_model, load_checkpoint
from pipeline.region.config import STREAMS, RegionConfig, resolve_device
from pipeline.region.data import RegionFrames, frame_records
from pipeline.training.precision import autocast, autocast_dtype
from pipeline.region.feature_cache import write_feature_cache

log = logging.getLogger("pipeline.region.features")


@dataclass(frozen=True)
class Frontend:
    """A stage-1 front-end ready to run: what a job loads once for all its videos."""

    net: torch.nn.Module  # eval mode, on ``device``
    cfg: RegionConfig
    device: torch.device
    stage1: Path
    stage1_sha256: str


def load_frontend(stage1: str | Path, streams: str, device_name: str = "auto") -> Frontend:
    """The front-end of the stage-1 checkpoint ``stage1`` (trained on ``streams``)."""
    state, meta, cfg = load_checkpoint(stage1, "stage1")
    if meta["streams"] != streams:
        raise DataError(stage1, f"checkpoint is for streams {meta['streams']!r}, not {streams!r}")
    device = resolve_device(device_name)
    model = build_stage1_model(cfg, streams)
    model.load_state_dict(state)
    return Frontend(model.frontend.to(device).eval(), cfg, device, Path(stage1),
                    file_sha256(stage1))


@torch.no_grad()
def extract_features(*, index: str | Path, video: str, frames_dir: str | Path,
                     flow_dir: str | Path | None, streams: str, stage1: str | Path,
                     out: str | Path, device_name: str = "auto", batch_size: int = 4,
                     load: Callable[[], Frontend] | None = None) -> Path:
    """Write the feature cache of ``video`` from the stage-1 checkpoint ``stage1``.

    ``load``: the job's shared loader of ``stage1`` (``pipeline.cli.Once(load_frontend, ...)``);
    without it the checkpoint is loaded here.
    """
    loaded = load() if load is not None else load_frontend(stage1, streams, device_name)
    cfg, device, frontend = loaded.cfg, loaded.device, loaded.net
    records = frame_records(read_index(index), "", videos=[video])
    if not records:
        raise DataError(index, f"video {video!r} has no annotated frames in the index")
    dataset = RegionFrames(records, cfg.input_size, frames_dir=frames_dir,
                           flow_dir=flow_dir if streams == "rgbflow" else None, labels=False,
                           flow_max_px=cfg.frontend.flow_max_px)
    dtype = autocast_dtype(device, cfg.amp)
    chunks = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        rgb = torch.stack([it["rgb"] for it in items]).to(device)
        flow = torch.stack([it["flow"] for it in items]).to(device) if streams == "rgbflow" \
            else None
        with autocast(device, dtype):
            feats = frontend(rgb, flow)
        chunks.append(feats.float().cpu().numpy())
    features = np.concatenate(chunks)
    native = tuple(int(x) for x in dataset[0]["native_size"])
    split = records[0].split
    write_feature_cache(
        out, features=features, frame_ids=[r.frame for r in records], config=cfg,
        video=video, split=split, streams=streams, input_height=cfg.input_size[0],
        input_width=cfg.input_size[1], native_height=native[0], native_width=native[1],
        stride=int(frontend.stride), channels=int(frontend.out_channels),
        stage1=str(loaded.stage1), stage1_sha256=loaded.stage1_sha256,
    )
    log.info("%s: %d frames -> features %s float16 (%.1f KiB per frame)", video, len(records),
             "x".join(map(str, features.shape[1:])), features[0].size * 2 / 1024)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.region.features",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV (stage index)")
    parser.add_argument("--frames-dir", type=Path, required=True, help="folder of frames caches")
    parser.add_argument("--flow-dir", type=Path, help="folder of flow caches (rgbflow only)")
    parser.add_argument("--streams", choices=STREAMS, required=True)
    parser.add_argument("--stage1", type=Path, required=True, help="stage-1 checkpoint")
    add_video_args(parser, "out", required=("out",))
    add_config_args(parser, "region_model")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = config_from_args(args, RegionConfig, "region_model")
    return run_videos(log, extract_features, video_jobs(parser, args), index=args.index,
                      frames_dir=args.frames_dir, flow_dir=args.flow_dir, streams=args.streams,
                      stage1=args.stage1, device_name=cfg.device,
                      load=Once(load_frontend, args.stage1, args.streams, cfg.device))


if __name__ == "__main__":
    sys.exit(main())
