"""Shards: which videos one per-video-stage job handles (``cluster.videos_per_job``).

A job that handles several videos pays the interpreter start-up, ``import torch`` and the model
load once. Membership must be *stable*: adding or removing a video must not reshuffle every
shard, or Snakemake would re-run the whole stage. A modulus over a shard count derived from the
number of videos does reshuffle (the count changes), and so does chunking a sorted list by a
fixed size (every later boundary shifts). Here shards are content-defined, like chunks in a
deduplicating backup:

1. each video id gets a 64-bit key from its SHA-1 (``order_key``), and the ids are laid out on
   a circle in key order;
2. a video whose *other* hash bits (``is_boundary``) are 0 modulo ``videos_per_job`` starts a
   new shard (one video in ``videos_per_job`` on average); a shard runs to the next boundary;
3. a shard longer than ``2 * videos_per_job`` is cut, inside itself, into equal pieces of at most
   that size (bounding the job's runtime).

Property (tested): adding or removing a video changes the members of the one shard it falls in
(a boundary video splits that shard in two, or merges two when removed); every other shard keeps
the same name and members. Which videos exist, and their split, never matter for a video's place:
train and test videos may share a shard. With ``videos_per_job`` 1 every video is its own shard,
named by the video id.

A shard is named ``s<16 hex digits>``, the key of its first video (unique, a valid identifier).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import from_dict
from pipeline.errors import DataError
from pipeline.index import DatasetConfig, expected_videos, read_index
from pipeline.synth.plan import SynthConfig, plan_dataset


def _digest(video: str) -> bytes:
    return hashlib.sha1(video.encode("utf-8")).digest()


def order_key(video: str) -> int:
    """Position of ``video`` on the circle: the first 8 bytes of SHA-1(id), big-endian."""
    return int.from_bytes(_digest(video)[:8], "big")


def is_boundary(video: str, videos_per_job: int) -> bool:
    """Whether ``video`` starts a shard: bytes 8..16 of SHA-1(id) mod ``videos_per_job`` is 0
    (independent of the order key, so boundaries are spread evenly round the circle)."""
    return int.from_bytes(_digest(video)[8:16], "big") % videos_per_job == 0


def shard_name(video: str) -> str:
    return f"s{order_key(video):016x}"


def _cut(run: list[str], longest: int) -> list[list[str]]:
    """``run`` in ceil(len/longest) consecutive pieces of nearly equal size."""
    pieces = math.ceil(len(run) / longest)
    size, extra = divmod(len(run), pieces)
    out, start = [], 0
    for i in range(pieces):
        stop = start + size + (1 if i < extra else 0)
        out.append(run[start:stop])
        start = stop
    return out


def make_shards(videos: Iterable[str], videos_per_job: int) -> dict[str, list[str]]:
    """``{shard name: [video ids in key order]}``; every video in exactly one shard.

    Args:
        videos: video ids (duplicates ignored).
        videos_per_job: mean shard size (>= 1); no shard has more than twice as many.
    """
    if videos_per_job < 1:
        raise ValueError(f"videos_per_job must be >= 1, got {videos_per_job}")
    order = sorted(set(videos), key=order_key)
    if not order:
        return {}
    if videos_per_job == 1:
        return {v: [v] for v in order}
    starts = [i for i, v in enumerate(order) if is_boundary(v, videos_per_job)]
    if starts:  # rotate: the videos before the first boundary close the circle's last run
        order = order[starts[0]:] + order[:starts[0]]
        starts = [s - starts[0] for s in starts]
    else:
        starts = [0]
    runs = [order[a:b] for a, b in zip(starts, starts[1:] + [len(order)])]
    shards = {}
    for run in runs:
        for piece in _cut(run, 2 * videos_per_job):
            shards[shard_name(piece[0])] = piece
    return shards


def planned_videos(config: dict, index_csv: str | Path) -> tuple[list[tuple[str, str]] | None, str]:
    """``([(video, split)], source)``: the videos the frame index holds (or will hold), known
    when Snakemake reads the workflow, so shard jobs can be planned before the index exists.

    In order:
    1. ``synthetic.enabled``: the plan of the synthetic release (``plan_dataset``, a pure
       function of the ``synthetic`` section; its videoset.csv lists the plan in order, every
       video annotated), cut to ``dataset.max_videos``;
    2. ``dataset.on_bad_video: fail`` and the release's videoset.csv exists: its listed,
       annotated videos (``pipeline.index.expected_videos``: exactly the index's videos, or the
       index job fails before any per-video job runs);
    3. the index, if it exists (``skip``: only the index knows which videos were left out);
    4. else ``None``: no plan (``skip`` before the index exists); every video then runs as a
       one-video job.

    Returns:
        (list, source) with source naming where the list came from, or (None, reason).
    """
    dataset = from_dict(DatasetConfig, config["dataset"], "dataset")
    if config["synthetic"]["enabled"]:
        plans = plan_dataset(from_dict(SynthConfig, config["synthetic"], "synthetic"))
        if dataset.max_videos is not None:
            plans = plans[: dataset.max_videos]
        return [(p.vid, "test" if p.test else "train") for p in plans], "synthetic plan"
    unread = ""
    if dataset.on_bad_video == "fail" and Path(dataset.release, "videoset.csv").is_file():
        try:
            return expected_videos(dataset), "videoset.csv"
        except DataError as exc:  # the index job reports it (an existing index is stale then)
            unread = f"; release not readable ({exc})"
            if not Path(index_csv).is_file():
                return None, unread[2:]
    if Path(index_csv).is_file():
        table = read_index(index_csv)
        pairs = table[["video", "split"]].drop_duplicates()
        return list(pairs.itertuples(index=False, name=None)), "frame index" + unread
    return None, "on_bad_video skip and no frame index yet"
