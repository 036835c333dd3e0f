"""Stage ``e2e_detect_eval``: spatial detection mAP of actors, actions and actor-action pairs
(Ji et al. 2018 Table 2; protocol of Kalogeiton et al. 2017, :mod:`pipeline.e2e.detection_ap`).

Every annotated frame of the split's videos (the protocol: ``test``) is scored against its GT
instances (``.mat`` ids and the tight boxes of their ``reMask`` masks, at the native size;
``reBBox`` is not used, see :mod:`pipeline.a2d.annotations`), box IoU >= ``--iou`` (0.5).
Detections are scored per class as a detector would (actor ``p(actor | box)``, action and joint
``p(actor | box) * p(action | box is an actor)``) and duplicates suppressed per scored class by
NMS at ``--nms-iou`` (0.5): :func:`pipeline.e2e.postprocess.detection_scores`. A missing
detections file or frame is an error: scoring it as "no detections" would hide a broken run.

    python -m pipeline.e2e.detect_eval --release DIR --index results/index/frames.csv \\
        --detections-dir results/predictions/e2e_full/detections \\
        --out results/eval/e2e_full.detection.json [--split test] [--iou 0.5] [--nms-iou 0.5]

Output JSON (AP and mAP in percent, like the paper's tables; a class without GT is null and
left out of the mean)::

    {"actor": {"map": 77.2, "ap": {"adult": ..}}, "action": {..}, "joint": {"map": ..,
     "ap": {"adult-climbing": ..}}, "meta": {...}}

``ap`` is keyed by class name (joint: ``actor-action``); ``meta`` holds the release, whether it
is synthetic, the split, frame / video counts, IoU and NMS thresholds, the scoring rule and the
detections' provenance, which :mod:`pipeline.tables` (``ji_table2``) and :mod:`pipeline.e2e.zero_shot` read.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import torch

from pipeline.a2d.annotations import read_annotation
from pipeline.a2d.classes import action_name, actor_name, pair_name
from pipeline.a2d.release import Release
from pipeline.atomic import write_text_atomic
from pipeline.e2e.detection_ap import DetectionAP
from pipeline.e2e.postprocess import DETECTION_NMS_IOU
from pipeline.e2e.predict import DETECTIONS_FORMAT, DETECTIONS_STAGE, read_detections
from pipeline.errors import DataError
from pipeline.evaluate import eval_frames, release_is_synthetic
from pipeline.h5cache import open_cache

log = logging.getLogger("pipeline.e2e.detect_eval")
PROVENANCE_KEYS = ("stage", "source", "config_sha256", "code_version", "code_hash", "variant",
                   "checkpoint_sha256", "zero_shot_actor")
NAMES = {"actor": actor_name, "action": action_name, "joint": pair_name}


def gt_instances(mat: str | Path) -> dict[str, torch.Tensor]:
    """GT boxes (G, 4) (tight boxes of the masks), actor (G,), action (G,) int64 of one frame."""
    ann = read_annotation(mat)
    ids = torch.from_numpy(ann.ids.astype("int64"))
    return {"boxes": torch.from_numpy(ann.boxes.reshape(-1, 4)), "actor": ids // 10,
            "action": ids % 10}


def _provenance(path: Path) -> dict:
    with open_cache(path, stage=DETECTIONS_STAGE, format_version=DETECTIONS_FORMAT) as f:
        out = {}
        for k in PROVENANCE_KEYS:
            if k in f.attrs:
                v = f.attrs[k]
                out[k] = v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)
        return out


def _pct(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * value


def evaluate_detections(release: Release, frames: dict[str, list[int]], detections_dir: Path,
                        iou: float = 0.5, nms_iou: float | None = DETECTION_NMS_IOU
                        ) -> tuple[dict, list[dict]]:
    """Accumulate every frame; returns (``{setting: {"map", "ap"}}`` in percent, provenance).

    ``nms_iou``: IoU of the class-wise duplicate suppression (None: none).
    """
    ap = DetectionAP(iou_thresh=iou, nms_iou=nms_iou)
    provenance: list[dict] = []
    for vid, frame_ids in frames.items():
        path = detections_dir / f"{vid}.h5"
        if not path.is_file():
            raise DataError(path, "missing detections file of a video with GT frames")
        dets = read_detections(path)
        prov = _provenance(path)
        if prov not in provenance:
            provenance.append(prov)
        for frame in frame_ids:
            if frame not in dets:
                raise DataError(path, f"no detections for annotated GT frame {frame}")
            ap.update(dets[frame], gt_instances(release.mat(vid, frame)))
    result = {}
    for setting, res in ap.compute().items():
        result[setting] = {"map": _pct(res["map"]),
                           "ap": {NAMES[setting](c): _pct(v) for c, v in res["ap"].items()},
                           "ap_by_id": {str(c): _pct(v) for c, v in res["ap"].items()}}
    return result, provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.e2e.detect_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder (GT)")
    parser.add_argument("--index", type=Path,
                        help="frame index CSV (default: videoset.csv + Annotations/mat listing)")
    parser.add_argument("--detections-dir", type=Path, required=True,
                        help="folder of <vid>.h5 detections (stage e2e_predict)")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="split to score (the protocol: test)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of a true positive (0.5)")
    parser.add_argument("--nms-iou", type=float, default=DETECTION_NMS_IOU,
                        help="IoU of the class-wise NMS that suppresses duplicate detections of "
                             f"a scored class ({DETECTION_NMS_IOU})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        release = Release.at(args.release)
        frames = eval_frames(release, args.index, args.split)
        if not frames:
            raise DataError(args.index or release.videoset, f"no annotated {args.split} frames")
        result, provenance = evaluate_detections(release, frames, args.detections_dir, args.iou,
                                                 args.nms_iou)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    result["meta"] = {
        "release": str(release.root.resolve()),
        "synthetic": release_is_synthetic(release),
        "split": args.split,
        "n_videos": len(frames),
        "n_frames": sum(len(v) for v in frames.values()),
        "iou": args.iou,
        "nms_iou": args.nms_iou,
        "scoring": "actor p(actor|box); action, joint p(actor|box) * p(action|box is an actor); "
                   "class-wise NMS",
        "units": "percent",
        "predictions": str(args.detections_dir.resolve()),
        "prediction_format": "e2e_detections",
        "predictions_provenance": provenance,
    }
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    log.info("%s: mAP actor %s, action %s, joint %s (%d frames)", args.out,
             *(f"{result[s]['map']:.1f}" if result[s]["map"] is not None else "n/a"
               for s in ("actor", "action", "joint")), result["meta"]["n_frames"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
