"""Stage ``index``: the frame index that every later stage reads.

One row per annotated frame (found by listing ``Annotations/mat/<vid>/*.mat``), with columns
``video, frame, split, label, height, width, n_frames, clip, mat, col, instance_h5`` (paths
relative to the release root; ``frame`` 1-based). ``split`` is ``train`` or ``test`` from the
``test`` flag of ``videoset.csv``. Counts are read off the files, never assumed.

    python -m pipeline.index --release DIR --out FILE.csv [--config config.yaml]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.a2d.release import Release
from pipeline.a2d.videoset import VideoRecord, read_videoset
from pipeline.atomic import atomic_path
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.video import probe_clip

log = logging.getLogger("pipeline.index")
COLUMNS = ("video", "frame", "split", "label", "height", "width", "n_frames", "clip", "mat", "col",
           "instance_h5")


@dataclass(frozen=True)
class DatasetConfig:
    release: str
    instances: str | None
    on_bad_video: str  # "fail" | "skip"
    max_videos: int | None


def _video_rows(release: Release, rec: VideoRecord, probe: bool) -> list[dict]:
    clip = release.clip(rec.vid)
    if not clip.is_file():
        raise DataError(clip, f"missing clip of video {rec.vid!r} listed in videoset.csv")
    n_frames = rec.frames
    if probe:
        info = probe_clip(clip)
        n_frames = min(n_frames, info.n_frames)
    rows = []
    for frame in release.annotated_frames(rec.vid):
        if frame > n_frames:
            raise DataError(release.mat(rec.vid, frame),
                            f"annotated frame {frame} is past the clip's end ({n_frames} frames)")
        inst = release.instance_h5(rec.vid, frame)
        rows.append({
            "video": rec.vid, "frame": frame, "split": rec.split, "label": rec.label,
            "height": rec.height, "width": rec.width, "n_frames": n_frames,
            "clip": str(clip.relative_to(release.root)),
            "mat": str(release.mat(rec.vid, frame).relative_to(release.root)),
            "col": str(release.col(rec.vid, frame).relative_to(release.root)),
            "instance_h5": str(inst) if inst else "",
        })
    return rows


def listed_records(release: Release, cfg: DatasetConfig) -> list[VideoRecord]:
    """The videoset.csv rows the index looks at (the first ``max_videos`` if set)."""
    records = read_videoset(release.videoset)
    return records if cfg.max_videos is None else records[: cfg.max_videos]


def expected_videos(cfg: DatasetConfig) -> list[tuple[str, str]]:
    """``[(video, split)]`` the index will hold if no video is bad, without opening a clip: the
    listed videos with at least one annotation file (one that has none gets no index row).

    With ``on_bad_video: fail`` this *is* the index's video list, or the index job fails; with
    ``skip`` the index may hold fewer. Cheap (one folder listing per video), so the workflow
    can plan its shard jobs (pipeline.shards) before the index exists.
    """
    release = Release.at(cfg.release, cfg.instances)
    return [(rec.vid, rec.split) for rec in listed_records(release, cfg)
            if release.annotated_frames(rec.vid)]


def build_index(cfg: DatasetConfig, probe_clips: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Index the release. Returns the table and the messages of videos left out (``skip``)."""
    release = Release.at(cfg.release, cfg.instances)
    records = listed_records(release, cfg)
    rows: list[dict] = []
    skipped: list[str] = []
    for rec in records:
        try:
            rows.extend(_video_rows(release, rec, probe_clips))
        except DataError as exc:
            if cfg.on_bad_video == "fail":
                raise
            skipped.append(str(exc))
            log.warning("skipping video %s: %s", rec.vid, exc)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table, skipped


def read_index(path: str | Path) -> pd.DataFrame:
    """Read an index written by this stage (video ids kept as strings: some start with '-')."""
    table = pd.read_csv(path, dtype={"video": str, "instance_h5": str, "split": str},
                        keep_default_na=False)
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise DataError(path, f"not a frame index, missing columns {sorted(missing)}")
    return table


def summary(table: pd.DataFrame) -> str:
    vids = table.groupby("split")["video"].nunique()
    frames = table.groupby("split").size()
    parts = [f"{s}: {int(vids.get(s, 0))} videos / {int(frames.get(s, 0))} annotated frames"
             for s in ("train", "test")]
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, help="A2D Release/ folder (overrides the config)")
    parser.add_argument("--out", type=Path, required=True, help="frame index CSV to write")
    parser.add_argument("--no-probe", action="store_true",
                        help="trust videoset.csv frame counts instead of opening every clip")
    add_config_args(parser, "dataset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args, DatasetConfig, "dataset")
    if args.release is not None:
        cfg = DatasetConfig(str(args.release), cfg.instances, cfg.on_bad_video, cfg.max_videos)
    try:
        table, skipped = build_index(cfg, probe_clips=not args.no_probe)
    except DataError as exc:
        log.error("%s", exc)
        return 1
    if table.empty:
        log.error("%s: no annotated frames found", cfg.release)
        return 1
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    log.info("indexed %s (%d videos left out)", summary(table), len(skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
