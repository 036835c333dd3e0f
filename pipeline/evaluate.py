"""Stage ``evaluate``: score predicted label maps against the A2D ground truth.

The A2D protocol (``shared/docs/a2d-format.md`` section 6, :mod:`pipeline.metrics`): every
annotated frame of the test videos, GT ``reS_id`` read from the ``.mat`` at native resolution, one
confusion matrix over all of them; glo / ave / mIoU in percent for the actor, action and joint
settings. Optionally the same on non-boundary pixels only (Dang et al. Table 2) and the
per-class accuracies (Dang et al. Table 5).

Beside them, in its own block ``video_averaged`` of the output (never mixed with the protocol's
numbers): the per-frame, video-averaged IoU that MED-VT (CVPR 2023) and later work report as
"mIoU" on A2D (:class:`pipeline.metrics.VideoAveragedIoU`), in percent for actor, action and
joint, so such numbers can be put beside ours. It is not the A2D protocol.

    python -m pipeline.evaluate --release DIR [--index results/index/frames.csv] \\
        (--pred-png DIR | --pred-h5 DIR | --all-background) --out FILE.json [--split test] \\
        [--non-boundary-out FILE.json] [--per-class-out FILE.csv] [--missing-as-background]

Predictions, at the GT's size (upsample before writing them):

- ``--pred-png DIR``: ``DIR/<vid>/<fff>.png`` colour PNGs in the ``Annotations/col`` layout and
  palette (what any A2D method can produce);
- ``--pred-h5 DIR``: ``DIR/<vid>.h5`` caches of stage ``predict`` (``labels`` (A, H, W) uint8,
  ``frame_ids`` (A,) int32; ``docs/architecture.md``);
- ``--all-background``: label 0 everywhere, the reference value of the split: a model whose
  number equals it learned nothing (rule ``evaluate_background`` -> ``all_background.json``).

A prediction of the wrong size, with a colour/id outside the 64-entry palette, or missing for a
GT frame is an error naming the file (``--missing-as-background`` scores a missing frame as all
background instead, and the count is recorded in the output).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from pipeline.a2d.annotations import read_annotation, read_col_png
from pipeline.a2d.release import Release
from pipeline.a2d.videoset import read_videoset
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.h5cache import open_cache
from pipeline.index import read_index
from pipeline.metrics import (
    SETTINGS,
    ConfusionMatrix,
    VideoAveragedIoU,
    non_boundary_mask,
    save_counts,
)

log = logging.getLogger("pipeline.evaluate")
PREDICT_STAGE = "predict"
PREDICT_FORMAT = 1
#: Provenance attributes of prediction caches copied into the output (which run made them).
PROVENANCE_KEYS = ("stage", "source", "config_sha256", "code_version", "code_hash")


@dataclass(frozen=True)
class EvalConfig:
    split: str  # "test" (the protocol) or "train"
    boundary_width: int  # total width in px of the band dropped by the non-boundary evaluation
    missing_as_background: bool  # score a missing prediction as all background instead of failing


class MissingPrediction(DataError):
    """No prediction for a GT frame; ``path`` is the file that was expected."""


def eval_frames(release: Release, index: Path | None, split: str) -> dict[str, list[int]]:
    """``{video: [1-based frame ids]}`` of the annotated frames of ``split``'s videos.

    From the frame index when given, else from ``videoset.csv`` and a listing of
    ``Annotations/mat/<vid>/`` (never computed from the ``anno`` column).
    """
    if index is not None:
        table = read_index(index)
        table = table[table.split == split]
        frames: dict[str, list[int]] = {}
        for vid, group in table.groupby("video", sort=True):
            frames[str(vid)] = sorted(int(f) for f in group.frame)
        return frames
    frames = {}
    for rec in sorted(read_videoset(release.videoset), key=lambda r: r.vid):
        if rec.split == split:
            listed = release.annotated_frames(rec.vid)
            if listed:
                frames[rec.vid] = listed
    return frames


class PngPredictions:
    """``root/<vid>/<fff>.png`` colour PNGs, decoded through the A2D palette."""

    kind = "png"

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise DataError(root, "prediction folder not found")
        self.root = root
        self.provenance: list[dict] = []  # PNGs carry none

    @contextlib.contextmanager
    def video(self, vid: str) -> Iterator[PngVideo]:
        yield PngVideo(self.root / vid)


class PngVideo:
    """The PNG predictions of one video (``root/<vid>/``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, frame: int) -> Path:
        return self.folder / f"{frame:05d}.png"

    def frame(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        """(H, W) uint8 label map of ``frame``; DataError naming the PNG if it is bad."""
        path = self.path(frame)
        if not path.is_file():
            raise MissingPrediction(path, "missing prediction PNG for an annotated GT frame")
        return read_col_png(path, size=size)


class BackgroundPredictions:
    """The all-background prediction (label 0 everywhere): the reference value of a split.

    A model whose number equals this one learned nothing, however the table looks."""

    kind = "all-background"

    def __init__(self) -> None:
        self.provenance: list[dict] = [{"source": "all-background reference (label 0 everywhere)"}]

    @contextlib.contextmanager
    def video(self, vid: str) -> Iterator[BackgroundVideo]:
        yield BackgroundVideo()


class BackgroundVideo:
    def path(self, frame: int) -> Path:
        return Path("<all-background>")

    def frame(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        return np.zeros(size, dtype=np.uint8)


class H5Predictions:
    """``root/<vid>.h5`` caches of stage ``predict``, read one frame at a time."""

    kind = "h5"

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise DataError(root, "prediction folder not found")
        self.root = root
        self.provenance: list[dict] = []  # distinct provenance attrs of the files read

    @contextlib.contextmanager
    def video(self, vid: str) -> Iterator[H5Video]:
        path = self.root / f"{vid}.h5"
        if not path.is_file():
            yield H5Video(path, None)  # every frame of this video is then missing
            return
        with open_cache(path, stage=PREDICT_STAGE, format_version=PREDICT_FORMAT) as f:
            prov = {k: _attr_str(f.attrs[k]) for k in PROVENANCE_KEYS if k in f.attrs}
            if prov not in self.provenance:
                self.provenance.append(prov)
            yield H5Video(path, f)


class H5Video:
    """The open prediction cache of one video (``f`` None: the file does not exist)."""

    def __init__(self, path: Path, f: h5py.File | None) -> None:
        self._path = path
        self._rows: dict[int, int] = {}
        self._labels = None
        if f is None:
            return
        for key in ("labels", "frame_ids"):
            if key not in f:
                raise DataError(path, f"missing dataset {key!r}")
        labels, ids = f["labels"], np.asarray(f["frame_ids"])
        if labels.ndim != 3 or ids.shape != (labels.shape[0],):
            raise DataError(path, f"labels {labels.shape} / frame_ids {ids.shape}: expected "
                                  "(A, H, W) and (A,)")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(path, f"labels must be integer ids, got {labels.dtype}")
        self._labels = labels
        self._rows = {int(fid): row for row, fid in enumerate(ids)}

    def path(self, frame: int) -> Path:
        return self._path

    def frame(self, frame: int, size: tuple[int, int]) -> np.ndarray:
        """(H, W) label map of ``frame``; DataError naming the HDF5 file if it is bad."""
        if self._labels is None:
            raise MissingPrediction(self._path,
                                    "missing prediction file for a video with GT frames")
        if frame not in self._rows:
            raise MissingPrediction(self._path, f"no prediction for annotated GT frame {frame}")
        if tuple(self._labels.shape[1:]) != tuple(size):
            raise DataError(self._path, f"frame {frame}: prediction size {self._labels.shape[1]}x"
                                        f"{self._labels.shape[2]} != GT size {size[0]}x{size[1]}")
        return np.asarray(self._labels[self._rows[frame]])  # one chunk: bounded memory


def _attr_str(value) -> str | int:
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def release_is_synthetic(release: Release) -> bool | None:
    """Whether the release is our synthetic dataset: the first line of the README that
    ``pipeline.synth`` writes says "Synthetic A2D-format release"; the real release's README is
    the palette table. None (unknown) when there is no README."""
    readme = release.root / "README"
    if not readme.is_file():
        return None
    first = readme.read_text(errors="replace").lstrip().split("\n", 1)[0]
    return "synthetic" in first.lower()


def evaluate(release: Release, frames: dict[str, list[int]],
             preds: PngPredictions | H5Predictions, cfg: EvalConfig,
             non_boundary: bool = False,
             video_averaged: VideoAveragedIoU | None = None,
             ) -> tuple[ConfusionMatrix, ConfusionMatrix | None, list]:
    """Accumulate the confusion matrices over every GT frame, one frame in memory at a time
    (and, if given, the per-frame IoUs of ``video_averaged``, all pixels).

    Returns:
        (all-pixels matrix, non-boundary matrix or None, list of missing prediction paths
        scored as background).
    """
    cm = ConfusionMatrix()
    cm_nb = ConfusionMatrix() if non_boundary else None
    missing: list[str] = []
    for vid, frame_ids in frames.items():
        with preds.video(vid) as video:
            for frame in frame_ids:
                mat = release.mat(vid, frame)
                gt = read_annotation(mat).label  # (H, W) uint8, validated
                try:
                    pred = video.frame(frame, gt.shape)
                except MissingPrediction as exc:
                    if not cfg.missing_as_background:
                        raise
                    missing.append(f"{exc.path} (frame {frame})")
                    pred = np.zeros_like(gt)
                try:
                    cm.update(gt, pred)  # validates the ids for video_averaged too
                    if video_averaged is not None:
                        video_averaged.update(vid, gt, pred)
                    if cm_nb is not None:
                        cm_nb.update(gt, pred, non_boundary_mask(gt, cfg.boundary_width))
                except ValueError as exc:
                    raise DataError(video.path(frame), f"frame {frame}: {exc}") from None
    return cm, cm_nb, missing


def _clean(value):
    """NaN -> None so the JSON is strict (a class-less setting has no score)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def result_json(cm: ConfusionMatrix, meta: dict,
                video_averaged: VideoAveragedIoU | None = None) -> dict:
    """``{"actor": {...}, "action": {...}, "joint": {...}, "per_class_accuracy": ...,
    ["video_averaged": {...},] "meta"}``: the A2D protocol's numbers per setting, and apart
    from them the video-averaged IoU (see :meth:`VideoAveragedIoU.compute`)."""
    out: dict = {name: {k: _clean(v) for k, v in s.items()} for name, s in cm.summary().items()}
    per_class: dict = {name: {} for name in SETTINGS}
    for row in cm.per_class():
        per_class[row["setting"]][str(row["class_id"])] = row["accuracy"]
    out["per_class_accuracy"] = per_class
    if video_averaged is not None:
        out["video_averaged"] = video_averaged.compute()
    out["meta"] = meta
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder (GT)")
    parser.add_argument("--index", type=Path,
                        help="frame index CSV (default: videoset.csv + Annotations/mat listing)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred-png", type=Path, help="folder of <vid>/<fff>.png colour PNGs")
    src.add_argument("--pred-h5", type=Path, help="folder of <vid>.h5 prediction caches")
    src.add_argument("--all-background", action="store_true",
                     help="score the all-background prediction (the split's reference value)")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--split", choices=("test", "train"), help="split to score (config: test)")
    parser.add_argument("--non-boundary-out", type=Path,
                        help="also write the metrics on non-boundary pixels (Dang Table 2)")
    parser.add_argument("--boundary-width", type=int, help="band width in px (config: 15)")
    parser.add_argument("--per-class-out", type=Path,
                        help="CSV of per-class GT pixels, accuracy and IoU (Dang Table 5)")
    parser.add_argument("--confusion-out", type=Path,
                        help="also write the raw (80, 80) confusion counts as .npz (report)")
    parser.add_argument("--missing-as-background", action="store_true", default=None,
                        help="score a missing prediction as all background instead of failing")
    add_config_args(parser, "evaluation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args, EvalConfig, "evaluation")
    cfg = replace(cfg, **{k: v for k, v in (("split", args.split),
                                            ("boundary_width", args.boundary_width),
                                            ("missing_as_background", args.missing_as_background))
                          if v is not None})
    try:
        release = Release.at(args.release)
        frames = eval_frames(release, args.index, cfg.split)
        if not frames:
            raise DataError(args.index or release.videoset, f"no annotated {cfg.split} frames")
        preds = (BackgroundPredictions() if args.all_background
                 else PngPredictions(args.pred_png) if args.pred_png
                 else H5Predictions(args.pred_h5))
        va = VideoAveragedIoU()
        cm, cm_nb, missing = evaluate(release, frames, preds, cfg,
                                      non_boundary=args.non_boundary_out is not None,
                                      video_averaged=va)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    for path in missing[:20]:
        log.warning("missing prediction scored as background: %s", path)
    meta = {
        "release": str(release.root.resolve()),
        "synthetic": release_is_synthetic(release),
        "split": cfg.split,
        "n_videos": len(frames),
        "n_frames": cm.n_frames,
        "predictions": ("all-background" if args.all_background
                        else str((args.pred_png or args.pred_h5).resolve())),
        "prediction_format": preds.kind,
        "predictions_provenance": preds.provenance,
        "n_missing_as_background": len(missing),
        "config": asdict(cfg),
        "protocol": "A2D (Xu 2015 / Kalogeiton 2017): one confusion matrix over all frames, "
                    "background included, means over classes with GT pixels",
    }
    write_text_atomic(args.out, json.dumps(result_json(cm, {**meta, "pixels": "all"}, va),
                                           indent=2))
    if cm_nb is not None:
        nb_meta = {**meta, "pixels": "non-boundary", "boundary_width": cfg.boundary_width}
        write_text_atomic(args.non_boundary_out, json.dumps(result_json(cm_nb, nb_meta), indent=2))
    if args.confusion_out is not None:
        save_counts(args.confusion_out, cm)
    if args.per_class_out is not None:
        with atomic_path(args.per_class_out) as tmp:
            pd.DataFrame(cm.per_class()).to_csv(tmp, index=False, float_format="%.4f")
    s = cm.summary()
    log.info("%d frames / %d videos: %s", cm.n_frames, len(frames), "; ".join(
        f"{k} ave {v['ave']:.1f} glo {v['glo']:.1f} mIoU {v['miou']:.1f}" for k, v in s.items()))
    averaged = va.compute()
    log.info("%s: %s", averaged["label"], "; ".join(
        f"{k} {averaged[k]:.1f}" for k in SETTINGS if averaged[k] is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
