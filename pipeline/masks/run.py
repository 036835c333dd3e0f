"""Stage ``masks``: the candidate regions of every annotated frame of one video.

    python -m pipeline.masks.run --video=ID --source gt --index results/index/frames.csv \\
        --release DIR --out results/masks/gt/ID.h5
    python -m pipeline.masks.run --video=ID --source model --index results/index/frames.csv \\
        --frames results/frames/ID.h5 --weights results/segmenter/model.pt \\
        --out results/masks/model/ID.h5 [--config config.yaml]

Several videos in one process (a shard job; the segmenter is loaded once): repeat ``--video``
with its ``--out`` (and ``--frames``), or ``--video-list FILE`` with one ``--out`` per line.

Sources (Dang et al. 2018, Table 3):

- ``model``: the segmenter trained by ``train_segmenter`` (``--weights`` its model.pt);
- ``checkpoint``: a segmenter from any Mask R-CNN ResNet-FPN weights file (``--weights``, the
  rule passes ``segmenter.checkpoint``). A model file of this pipeline carries its architecture;
  a bare state dict (e.g. torchvision's COCO model) has depth, normalisation and classes read
  off its tensors, and image size and anchors from the ``segmenter`` section. Its classes are
  mapped to A2D actors by :mod:`pipeline.masks.labels` (unmapped classes get label 0 and are
  kept: the paper's "COCO" row uses all of a COCO model's regions);
- ``gt``: the ``.mat`` instances, score 1, mask 0/255 (no threshold, no top-N).

For model and checkpoint, regions scoring below ``masks.score_threshold`` are dropped and at most
``masks.top_n`` are kept per frame. A frame without a region is stored with N = 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.a2d.annotations import read_annotation
from pipeline.cli import Once, add_video_args, run_videos, video_jobs
from pipeline.config import add_config_args, config_from_args, from_dict, load_config, section
from pipeline.config import defaults as config_defaults
from pipeline.errors import DataError
from pipeline.frames import read_frames_cache
from pipeline.index import read_index
from pipeline.masks.cache import SOURCES, write_masks_cache
from pipeline.masks.config import MasksConfig, SegmenterConfig
from pipeline.masks.regions import Regions, regions_from_annotation
from pipeline.provenance import file_sha256

log = logging.getLogger("pipeline.masks.run")


def gt_regions(release: Path, rows) -> dict[int, Regions]:
    """``{frame: Regions}`` of the GT instances of the annotated frames in ``rows``."""
    return {int(r.frame): regions_from_annotation(read_annotation(release / str(r.mat)))
            for r in rows.itertuples()}


def load_segmenter_model(weights: Path, source: str, cfg: MasksConfig,
                         seg: SegmenterConfig) -> tuple:
    """(model, class mapping, device) of ``weights``, ready for :func:`segmenter_regions`."""
    # torch is imported here, not at module level: the gt source needs none of it, and the
    # import costs seconds in every one of the per-video jobs.
    from pipeline.masks.inference import resolve_device, set_postprocessing
    from pipeline.masks.labels import class_map_for
    from pipeline.masks.weights import load_segmenter

    model, arch = load_segmenter(weights, defaults=seg.inference_defaults())
    # Our own model predicts actors directly; a foreign checkpoint is mapped (labels.py).
    mapping = None if source == "model" else class_map_for(
        arch["num_classes"], seg.checkpoint_class_map)
    set_postprocessing(model, cfg.score_threshold, cfg.top_n)
    device = resolve_device(seg.device)
    model.to(device)
    log.info("segmenter %s: ResNet-%d FPN, %d classes, device %s", weights, arch["depth"],
             arch["num_classes"], device)
    return model, mapping, device


def segmenter_regions(frames_h5: Path, frame_ids: list[int], weights: Path, source: str,
                      cfg: MasksConfig, seg: SegmenterConfig,
                      load: Callable[[], tuple] | None = None) -> dict[int, Regions]:
    """``{frame: Regions}`` predicted by the segmenter of ``weights`` on the cached frames.

    ``load``: the job's shared loader (``pipeline.cli.Once(load_segmenter_model, ...)``: a shard
    job loads its model once); without it the model is loaded here."""
    from pipeline.masks.inference import predict_regions

    model, mapping, device = load() if load is not None else \
        load_segmenter_model(weights, source, cfg, seg)
    out: dict[int, Regions] = {}
    with read_frames_cache(frames_h5) as cache:
        missing = [f for f in frame_ids if f not in cache]
        if missing:
            raise DataError(frames_h5, f"annotated frame(s) {missing} are not cached")
        for start in range(0, len(frame_ids), cfg.batch_size):
            batch = frame_ids[start:start + cfg.batch_size]
            images = [cache.frame(f) for f in batch]
            out.update(zip(batch, predict_regions(model, images, device, mapping)))
    return out


def run_video(video: str, source: str, *, index: Path, out: Path, cfg: MasksConfig,
              seg: SegmenterConfig | None = None, release: Path | None = None,
              frames: Path | None = None, weights: Path | None = None,
              load: Callable[[], tuple] | None = None) -> dict[int, Regions]:
    """Compute and write the masks cache of one video; return its regions."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {list(SOURCES)}")
    table = read_index(index)
    rows = table[table.video == video]
    if rows.empty:
        raise DataError(index, f"video {video!r} is not in the index")
    checkpoint = sha = ""
    if source == "gt":
        if release is None:
            raise ValueError("source gt needs --release")
        regions = gt_regions(release, rows)
    else:
        if frames is None or weights is None or seg is None:
            raise ValueError(f"source {source} needs --frames, --weights and the segmenter config")
        regions = segmenter_regions(frames, sorted(int(f) for f in rows.frame), weights, source,
                                    cfg, seg, load)
        checkpoint, sha = str(weights), file_sha256(weights)
    sizes = {reg.size for reg in regions.values()}
    if len(sizes) != 1:
        raise DataError(index, f"video {video!r}: frames of different sizes {sorted(sizes)}")
    (h, w), = sizes
    write_masks_cache(out, regions, video=video, source=source, config=cfg, height=h, width=w,
                      checkpoint=checkpoint, checkpoint_sha256=sha)
    counts = [len(r) for _, r in sorted(regions.items())]
    log.info("video %s, source %s: %d frames, regions per frame %s -> %s", video, source,
             len(regions), counts, out)
    return regions


def _configs(args: argparse.Namespace) -> tuple[MasksConfig, SegmenterConfig]:
    cfg = config_from_args(args, MasksConfig, "masks")
    if args.segmenter_json:
        seg_dict = json.loads(args.segmenter_json)
    else:
        whole = load_config(args.config) if args.config else config_defaults()
        seg_dict = section(whole, "segmenter")
    return cfg, from_dict(SegmenterConfig, seg_dict, "segmenter")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.masks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV")
    parser.add_argument("--release", type=Path, help="A2D Release/ folder (source gt)")
    add_video_args(parser, "out", "frames", required=("out",))
    parser.add_argument("--weights", type=Path,
                        help="segmenter weights: model.pt (model) or segmenter.checkpoint")
    parser.add_argument("--segmenter-json", metavar="JSON",
                        help="section 'segmenter' as JSON (default: from --config, or defaults)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (the rule passes its threads:)")
    add_config_args(parser, "masks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads and args.source != "gt":
        import torch

        torch.set_num_threads(args.threads)
    jobs = video_jobs(parser, args)
    try:
        cfg, seg = _configs(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    return run_videos(log, run_video, jobs, config_errors=True, source=args.source,
                      index=args.index, cfg=cfg, seg=seg, release=args.release,
                      weights=args.weights,
                      load=None if args.source == "gt" else
                      Once(load_segmenter_model, args.weights, args.source, cfg, seg))


if __name__ == "__main__":
    sys.exit(main())
