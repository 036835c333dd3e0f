"""Stage ``e2e_predict``: label maps and detections of one video by a trained end-to-end model.

For every annotated frame of ``--video`` (its clip of ``num_frames`` frames and flows, at the
clip's native size), the model's instances (:func:`pipeline.e2e.postprocess.to_instances`: each
instance takes its best *valid* action, so only the 43 valid pairs occur) are

- painted into a joint label map (:func:`~pipeline.e2e.postprocess.instances_to_label_map`,
  ``score_thresh`` / ``mask_thresh``): ``--out`` in the predictions layout of
  ``docs/architecture.md`` (stage ``predict``, format 1: ``labels`` (A, H, W) uint8 at the
  native size, ``frame_ids`` (A,) int32) plus A2D colour PNGs in ``--png-dir``;
- saved as scored detections for mAP: ``--detections-out`` (stage ``e2e_detections``, format 1;
  one group ``%05d`` per annotated frame with ``boxes`` (D, 4) float32 xyxy native pixels,
  ``actor``, ``action`` (D,) int64, ``actor_score``, ``action_score``, ``score`` (D,) float32
  and ``action_probs`` (D, 9) float32; every detection above ``box_score_thresh``).

The ``no_mask`` variant has no mask head: its instance masks are its boxes filled (the paper
uses SharpMask there; we have none), and the file's ``source`` attribute says so.

    python -m pipeline.e2e.predict --checkpoint results/e2e/full/model.pt \\
        --index results/index/frames.csv --frames-dir results/frames --flow-dir results/flow \\
        --video=ID --out results/predictions/e2e_full/ID.h5 \\
        --png-dir results/predictions/e2e_full/png/ID \\
        --detections-out results/predictions/e2e_full/detections/ID.h5 [--config-json JSON]

The architecture comes from the checkpoint; ``score_thresh``, ``mask_thresh``, ``device`` and
``amp`` from ``--config``/``--config-json`` when given (else from the checkpoint's config).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.a2d.annotations import write_col_png
from pipeline.cli import Once, add_video_args, run_videos, video_jobs
from pipeline.config import add_config_args, config_from_args
from pipeline.e2e.config import E2EConfig, build_from_config, load_checkpoint, resolve_device
from pipeline.e2e.data import ClipFrames
from pipeline.e2e.postprocess import instances_to_label_map, to_instances
from pipeline.errors import DataError
from pipeline.h5cache import create_cache, open_cache
from pipeline.index import read_index
from pipeline.provenance import file_sha256
from pipeline.region.data import collate, frame_records
from pipeline.training.precision import autocast, autocast_dtype

log = logging.getLogger("pipeline.e2e.predict")
STAGE = "predict"
FORMAT_VERSION = 1
DETECTIONS_STAGE = "e2e_detections"
DETECTIONS_FORMAT = 1
#: Config keys used only at inference: taken from the run's config, not the checkpoint's.
INFERENCE_KEYS = ("score_thresh", "mask_thresh", "device", "amp")
DETECTION_KEYS = ("boxes", "actor", "action", "actor_score", "action_score", "score",
                  "action_probs")


def write_label_maps(out: Path, png_dir: Path | None, *, video: str, split: str,
                     labels: list[np.ndarray], frame_ids: list[int], config: object,
                     source: str, **attrs: object) -> None:
    """The prediction cache of one video (documented layout) and its colour PNGs."""
    h, w = labels[0].shape
    with create_cache(out, stage=STAGE, module="pipeline.e2e.predict", config=config,
                      format_version=FORMAT_VERSION, source=source, video=video, split=split,
                      **attrs) as f:
        ds = f.create_dataset("labels", shape=(len(labels), h, w), dtype=np.uint8,
                              chunks=(1, h, w), compression="gzip", compression_opts=4)
        for i, lab in enumerate(labels):
            ds[i] = lab
        f.create_dataset("frame_ids", data=np.asarray(frame_ids, np.int32))
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for fid, lab in zip(frame_ids, labels):
            write_col_png(png_dir / f"{fid:05d}.png", lab)


def write_detections(out: Path, *, video: str, split: str, detections: dict[int, dict],
                     config: object, source: str, **attrs: object) -> None:
    """Detections of every annotated frame of one video (layout in the module docstring)."""
    with create_cache(out, stage=DETECTIONS_STAGE, module="pipeline.e2e.predict", config=config,
                      format_version=DETECTIONS_FORMAT, source=source, video=video, split=split,
                      **attrs) as f:
        for fid, det in sorted(detections.items()):
            g = f.create_group(f"{fid:05d}")
            for key in DETECTION_KEYS:
                g.create_dataset(key, data=det[key])


def read_detections(path: str | Path) -> dict[int, dict[str, torch.Tensor]]:
    """``{frame id: {key: tensor}}`` of a detections file written by :func:`write_detections`."""
    out = {}
    with open_cache(path, stage=DETECTIONS_STAGE, format_version=DETECTIONS_FORMAT) as f:
        for name, g in f.items():
            missing = [k for k in DETECTION_KEYS if k not in g]
            if missing:
                raise DataError(path, f"frame {name} lacks {missing}")
            out[int(name)] = {k: torch.from_numpy(np.asarray(g[k])) for k in DETECTION_KEYS}
    return out


def _numpy_instances(inst: dict[str, torch.Tensor], probs: torch.Tensor) -> dict[str, np.ndarray]:
    return {
        "boxes": inst["boxes"].float().cpu().numpy().reshape(-1, 4),
        "actor": inst["actor"].cpu().numpy().astype(np.int64),
        "action": inst["action"].cpu().numpy().astype(np.int64),
        "actor_score": inst["actor_score"].float().cpu().numpy(),
        "action_score": inst["action_score"].float().cpu().numpy(),
        "score": inst["score"].float().cpu().numpy(),
        "action_probs": probs.float().cpu().numpy().reshape(-1, 9),
    }


@dataclass(frozen=True)
class Predictor:
    """An e2e model ready to predict: what a job loads once for all its videos."""

    model: torch.nn.Module  # eval mode, on ``device``
    cfg: E2EConfig
    meta: dict
    device: torch.device
    checkpoint: Path
    checkpoint_sha256: str


def load_predictor(checkpoint: str | Path, run_cfg: E2EConfig | None = None) -> Predictor:
    """The model of ``checkpoint``; the inference-only keys (:data:`INFERENCE_KEYS`) from
    ``run_cfg`` when given (so changing a threshold does not need a new model)."""
    ckpt = Path(checkpoint)
    state, meta, cfg = load_checkpoint(ckpt)
    if run_cfg is not None:
        cfg = replace(cfg, **{k: getattr(run_cfg, k) for k in INFERENCE_KEYS})
    device = resolve_device(cfg.device)
    model = build_from_config(cfg, meta["variant"], init_weights=False)
    model.load_state_dict(state)
    return Predictor(model.to(device).eval(), cfg, meta, device, ckpt, file_sha256(ckpt))


@torch.no_grad()
def predict_video(*, checkpoint: str | Path, index: str | Path, video: str,
                  frames_dir: str | Path, flow_dir: str | Path | None,
                  out: str | Path | None, png_dir: str | Path | None = None,
                  detections_out: str | Path | None = None, run_cfg: E2EConfig | None = None,
                  batch_size: int = 4, load: Callable[[], Predictor] | None = None) -> int:
    """Predict every annotated frame of ``video``; returns the number of frames.

    The architecture comes from the checkpoint (:func:`load_predictor`). ``load``: the job's
    shared loader (``pipeline.cli.Once(load_predictor, ...)``); without it the checkpoint is
    loaded here.
    """
    if out is None and detections_out is None:
        raise ValueError("nothing to write: give out and/or detections_out")
    loaded = load() if load is not None else load_predictor(checkpoint, run_cfg)
    model, cfg, meta, device, ckpt = (loaded.model, loaded.cfg, loaded.meta, loaded.device,
                                      loaded.checkpoint)
    records = frame_records(read_index(index), "", videos=[video])
    if not records:
        raise DataError(index, f"video {video!r} has no annotated frames in the index")
    variant = meta["variant"]
    if model.uses_flow and flow_dir is None:
        raise ValueError(f"variant {variant!r} has a motion stream: pass flow_dir")
    dataset = ClipFrames(records, frames_dir=frames_dir,
                         flow_dir=flow_dir if model.uses_flow else None,
                         num_frames=model.num_frames, labels=False)
    dtype = autocast_dtype(device, cfg.amp)
    labels: list[np.ndarray] = []
    detections: dict[int, dict] = {}
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        images = [x.to(device) for x in batch["images"]]
        flows = [x.to(device) for x in batch["flows"]] if "flows" in batch else None
        with autocast(device, dtype):
            outputs = model(images, flows)
        for frame, clip, output in zip(batch["frame"], images, outputs):
            size = tuple(clip.shape[-2:])
            inst = to_instances(output, size)
            labels.append(instances_to_label_map(inst, size, cfg.score_thresh, cfg.mask_thresh))
            detections[int(frame)] = _numpy_instances(inst, output["action_probs"])
    zs = meta.get("zero_shot_actor")
    source = f"e2e {variant}" + (f", zero-shot actor {zs}" if zs else "") + \
        (" (masks = filled boxes, no SharpMask)" if variant == "no_mask" else "")
    attrs = {"variant": variant, "checkpoint": str(ckpt),
             "checkpoint_sha256": loaded.checkpoint_sha256,
             "zero_shot_actor": int(zs or 0)}
    split = records[0].split
    frame_ids = [r.frame for r in records]
    if out is not None:
        write_label_maps(Path(out), Path(png_dir) if png_dir else None, video=video, split=split,
                         labels=labels, frame_ids=frame_ids, config=cfg, source=source, **attrs)
    if detections_out is not None:
        write_detections(Path(detections_out), video=video, split=split, detections=detections,
                         config=cfg, source=source, **attrs)
    log.info("%s: %s predicted %d frames at %dx%d (%d detections)", video, source, len(labels),
             *labels[0].shape, sum(len(d["score"]) for d in detections.values()))
    return len(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.e2e.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="e2e checkpoint (.pt)")
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV (stage index)")
    parser.add_argument("--frames-dir", type=Path, required=True, help="folder of frames caches")
    parser.add_argument("--flow-dir", type=Path, help="folder of flow caches (variants with flow)")
    # per video: --out (label maps .h5), --png-dir (A2D colour PNGs), --detections-out (.h5)
    add_video_args(parser, "out", "png_dir", "detections_out")
    add_config_args(parser, "e2e_model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_cfg = config_from_args(args, E2EConfig, "e2e_model") \
        if args.config or args.config_json else None
    return run_videos(log, predict_video, video_jobs(parser, args), config_errors=True,
                      checkpoint=args.checkpoint, index=args.index, frames_dir=args.frames_dir,
                      flow_dir=args.flow_dir, run_cfg=run_cfg,
                      load=Once(load_predictor, args.checkpoint, run_cfg))


if __name__ == "__main__":
    sys.exit(main())
