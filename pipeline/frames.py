"""Stage ``frames``: decode a clip once and cache the frames every later stage needs.

Cached per video (``results/frames/{video}.h5``, layout in ``docs/architecture.md``): every
annotated frame, its temporal context window of ``frames.context`` frames before and after
(clipped to the clip), and the next frame of each of those (the second image of its flow pair).
RGB uint8, one HDF5 chunk per frame so a reader touches only the frames it asks for.

    python -m pipeline.frames --release DIR --index results/index/frames.csv --video=ID \\
        --out results/frames/ID.h5 [--config config.yaml | --config-json JSON]

Several videos in one process (a shard job): repeat the pair, ``--video=A --out A.h5 --video=B
--out B.h5`` (``pipeline.cli.add_video_args``).

Readers use :func:`read_frames_cache`, which returns a :class:`FramesCache`::

    cache = read_frames_cache("results/frames/abc.h5")
    img = cache.frame(28)                    # (H, W, 3) uint8 RGB of 1-based frame 28
    clip = cache.frames(cache.window(28))    # (2*context+1, H, W, 3), borders repeated
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.a2d.release import Release
from pipeline.cli import add_video_args, run_videos, setup_logging, video_jobs
from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.h5cache import create_cache, open_cache
from pipeline.index import read_index
from pipeline.video import decode_frames, probe_clip, read_frames

log = logging.getLogger("pipeline.frames")
STAGE = "frames"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FramesConfig:
    context: int  # frames cached before and after each annotated frame (clipped to the clip)


def context_ids(frame: int, context: int, n_frames: int) -> list[int]:
    """The 1-based frames ``frame - context .. frame + context`` that exist in a clip of
    ``n_frames`` frames (clipped at both ends, so shorter than ``2*context+1`` at the borders)."""
    return list(range(max(1, frame - context), min(n_frames, frame + context) + 1))


def flow_pair(frame: int, n_frames: int) -> tuple[int, int]:
    """The frames whose flow stands for ``frame``: (t, t+1), or (t-1, t) at the clip's last frame."""
    if n_frames < 2:
        raise ValueError(f"a clip of {n_frames} frame(s) has no flow pair")
    return (frame, frame + 1) if frame < n_frames else (frame - 1, frame)


def flow_frame_ids(annotated: list[int] | np.ndarray, context: int, n_frames: int) -> list[int]:
    """Sorted frames that get a flow field: the annotated frames and their context windows."""
    ids: set[int] = set()
    for a in annotated:
        ids.update(context_ids(int(a), context, n_frames))
    return sorted(ids)


def frames_to_keep(annotated: list[int], context: int, n_frames: int) -> list[int]:
    """Sorted frames the cache holds: context windows plus both frames of each flow pair."""
    keep: set[int] = set()
    for t in flow_frame_ids(annotated, context, n_frames):
        keep.add(t)
        if n_frames >= 2:
            keep.update(flow_pair(t, n_frames))
    return sorted(keep)


class FramesCache:
    """Read access to one frames cache. The HDF5 file is opened lazily and never pickled, so an
    instance can be handed to DataLoader worker processes (each opens its own handle).

    Attributes:
        path, video, split: the file and its video.
        frame_ids: (T,) int32, 1-based ids of the cached rows, increasing.
        annotated: (A,) int32, the annotated frame ids.
        n_frames, height, width, fps, context: attributes of the clip and the config.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_cache(self.path, stage=STAGE, format_version=FORMAT_VERSION) as f:
            try:
                self.frame_ids = np.asarray(f["frame_ids"][:], dtype=np.int32)
                self.annotated = np.asarray(f["annotated"][:], dtype=np.int32)
                shape = f["frames"].shape
                self.video = str(f.attrs["video"])
                self.split = str(f.attrs.get("split", ""))
                self.n_frames = int(f.attrs["n_frames"])
                self.height = int(f.attrs["height"])
                self.width = int(f.attrs["width"])
                self.fps = float(f.attrs["fps"])
                self.context = int(f.attrs["context"])
            except KeyError as exc:
                raise DataError(self.path, f"frames cache lacks {exc}") from exc
        if shape != (len(self.frame_ids), self.height, self.width, 3):
            raise DataError(self.path, f"frames {shape} do not match frame_ids "
                                       f"({len(self.frame_ids)}) and {self.height}x{self.width}")
        self._row = {int(fid): i for i, fid in enumerate(self.frame_ids)}
        self._file: h5py.File | None = None

    def __contains__(self, frame: int) -> bool:
        return int(frame) in self._row

    def _dataset(self) -> h5py.Dataset:
        if self._file is None:
            self._file = h5py.File(self.path, "r", locking=False)
        return self._file["frames"]

    def frame(self, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of 1-based ``frame``; KeyError if it is not cached."""
        try:
            row = self._row[int(frame)]
        except KeyError:
            raise KeyError(f"{self.path}: frame {frame} is not cached "
                           f"(cached: {self.frame_ids.tolist()})") from None
        return self._dataset()[row]

    def frames(self, frames: list[int] | np.ndarray) -> np.ndarray:
        """(len(frames), H, W, 3) uint8 RGB, in the order given (repeats allowed)."""
        return np.stack([self.frame(f) for f in frames]) if len(frames) else \
            np.zeros((0, self.height, self.width, 3), np.uint8)

    def window(self, frame: int, context: int | None = None) -> list[int]:
        """Fixed-length window of ``2*context+1`` ids centred on ``frame`` (default: the cached
        context), with the clip's first/last frame repeated where the window leaves the clip."""
        c = self.context if context is None else context
        if c > self.context:
            raise ValueError(f"{self.path}: cached context is {self.context}, asked for {c}")
        return [min(max(t, 1), self.n_frames) for t in range(frame - c, frame + c + 1)]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> FramesCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles cannot be pickled; workers reopen
        return state


def read_frames_cache(path: str | Path) -> FramesCache:
    """Open a frames cache written by this stage (checks stage and format version)."""
    return FramesCache(path)


def write_frames_cache(path: str | Path, *, video: str, split: str, frames: dict[int, np.ndarray],
                       annotated: list[int], n_frames: int, fps: float,
                       cfg: FramesConfig) -> None:
    """Write ``{frame_id: (H, W, 3) uint8}`` atomically in the format of this stage."""
    ids = sorted(frames)
    first = frames[ids[0]]
    h, w = first.shape[:2]
    for fid in ids:
        if frames[fid].shape != (h, w, 3) or frames[fid].dtype != np.uint8:
            raise ValueError(f"frame {fid}: {frames[fid].shape} {frames[fid].dtype}, "
                             f"expected ({h}, {w}, 3) uint8")
    with create_cache(path, stage=STAGE, module="pipeline.frames", config=cfg,
                      format_version=FORMAT_VERSION, video=video, split=split,
                      n_frames=int(n_frames), height=int(h), width=int(w), fps=float(fps),
                      context=int(cfg.context)) as f:
        ds = f.create_dataset("frames", shape=(len(ids), h, w, 3), dtype=np.uint8,
                              chunks=(1, h, w, 3))
        for row, fid in enumerate(ids):  # row by row: never holds a second copy of the clip
            ds[row] = frames[fid]
        f.create_dataset("frame_ids", data=np.asarray(ids, np.int32))
        f.create_dataset("annotated", data=np.asarray(sorted(annotated), np.int32))


def cache_video(release: str | Path, index: str | Path, video: str, out: str | Path,
                cfg: FramesConfig) -> Path:
    """Decode ``video``'s clip once and write its frames cache to ``out``.

    Raises:
        DataError: the video is not in the index, the clip is missing or undecodable, or it
            ends before an annotated frame (naming the clip).
    """
    table = read_index(index)
    rows = table[table["video"] == video]
    if rows.empty:
        raise DataError(index, f"video {video!r} is not in the index")
    rel = Release.at(release)
    clip = rel.root / str(rows["clip"].iloc[0])
    info = probe_clip(clip)
    # The index's n_frames is already min(videoset.csv, container); the container count is
    # re-read here in case the clip changed since indexing.
    n_frames = min(int(rows["n_frames"].iloc[0]), info.n_frames)
    annotated = sorted(int(a) for a in rows["frame"])
    if annotated[-1] > n_frames:
        raise DataError(clip, f"annotated frame {annotated[-1]} is past the clip's end "
                              f"({n_frames} frames)")
    if n_frames < 2:
        raise DataError(clip, "a clip of one frame has no flow pair")
    keep = frames_to_keep(annotated, cfg.context, n_frames)
    frames, n_decoded = decode_frames(clip, keep)
    if n_decoded < keep[-1]:
        # The container over-reported its length: trust what decodes, as long as every
        # annotated frame does, and rebuild the context/flow frames for the real length.
        if annotated[-1] > n_decoded or n_decoded < 2:
            raise DataError(clip, f"clip has {n_decoded} decodable frames but annotated frame "
                                  f"{annotated[-1]} is needed")
        log.warning("%s: container reports %d frames, %d decode", clip, n_frames, n_decoded)
        n_frames = n_decoded
        keep = frames_to_keep(annotated, cfg.context, n_frames)
        if not set(keep) <= set(frames):
            frames = read_frames(clip, keep)
        frames = {k: frames[k] for k in keep}
    shapes = {a.shape for a in frames.values()}
    if len(shapes) != 1:
        raise DataError(clip, f"decoded frames change size within the clip: {sorted(shapes)}")
    write_frames_cache(out, video=video, split=str(rows["split"].iloc[0]), frames=frames,
                       annotated=annotated, n_frames=n_frames, fps=info.fps, cfg=cfg)
    log.info("%s: cached %d frames (%d annotated, context %d) of %d, %s", video, len(keep),
             len(annotated), cfg.context, n_frames, "x".join(map(str, next(iter(shapes)))))
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.frames", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder")
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV (stage index)")
    add_video_args(parser, "out", required=("out",))
    add_config_args(parser, "frames")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = config_from_args(args, FramesConfig, "frames")
    if cfg.context < 0:
        parser.error(f"frames.context must be >= 0, got {cfg.context}")
    jobs = video_jobs(parser, args)
    return run_videos(log, cache_video, jobs, release=args.release, index=args.index, cfg=cfg)


if __name__ == "__main__":
    sys.exit(main())
