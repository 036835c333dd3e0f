"""What every stage's ``main`` shares: the log format, and bad input -> one error line, exit 1.

    setup_logging()
    cfg = config_from_args(args, ...)
    return run_stage(log, compute_something, cfg, out=args.out)

A :class:`~pipeline.errors.DataError` names the file and the problem; the stage logs it and
exits with status 1, so Snakemake marks this job failed and (``--keep-going``) the other videos
go on. Other exceptions keep their traceback: they are bugs, not bad input.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import DataError

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """INFO and above to stderr (a rule's log file), one line per record, named by module."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def run_stage(log: logging.Logger, work: Callable[..., Any], *args: Any,
              config_errors: bool = False, **kwargs: Any) -> int:
    """``work(*args, **kwargs)``; exit status 0, or 1 after logging a DataError.

    ``config_errors``: a ValueError is also a bad input (an unknown model name, a missing
    checkpoint) and is logged as ``config: ...`` instead of raised.
    """
    try:
        work(*args, **kwargs)
    except DataError as exc:
        log.error("%s", exc)
        return 1
    except ValueError as exc:
        if not config_errors:
            raise
        log.error("config: %s", exc)
        return 1
    return 0


def add_video_args(parser: argparse.ArgumentParser, *per_video: str,
                   required: tuple[str, ...] = ()) -> None:
    """``--video`` (repeatable) or ``--video-list FILE`` (one id a line), and one repeatable
    option per name in ``per_video`` (e.g. ``out``): the i-th value belongs to the i-th video.

    One process handling several videos (a shard job, ``cluster.videos_per_job``) pays the
    start-up, the imports and the model load once. ``--video=ID --out PATH`` stays the one-video
    form (write ``--video=ID``: A2D ids may start with '-').
    """
    parser.add_argument("--video", action="append", default=[], metavar="ID",
                        help="video id, repeatable (write --video=ID: ids may start with '-')")
    parser.add_argument("--video-list", type=Path, metavar="FILE",
                        help="file of video ids, one a line (after any --video)")
    for name in per_video:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, action="append", type=Path, default=[], metavar="PATH",
                            help=f"{flag} of each video, in the order of the videos"
                            + (" (required)" if name in required else ""))
    parser.set_defaults(_per_video=per_video, _per_video_required=required)


def video_jobs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[dict]:
    """``[{"video": id, name: path or None, ...}]`` from :func:`add_video_args`'s options;
    exits with a usage error when the counts disagree."""
    videos = list(args.video)
    if args.video_list is not None:
        videos += [line.strip() for line in args.video_list.read_text().splitlines()
                   if line.strip()]
    if not videos:
        parser.error("give --video=ID (repeatable) or --video-list FILE")
    if len(set(videos)) != len(videos):
        parser.error("a video is given twice")
    jobs = [{"video": v} for v in videos]
    for name in args._per_video:
        values = getattr(args, name)
        if not values and name not in args._per_video_required:
            values = [None] * len(videos)
        if len(values) != len(videos):
            parser.error(f"{len(videos)} video(s) but {len(values)} --{name.replace('_', '-')}")
        for job, value in zip(jobs, values):
            job[name] = value
    return jobs


def run_videos(log: logging.Logger, work: Callable[..., Any], jobs: list[dict],
               config_errors: bool = False, **shared: Any) -> int:
    """``work(**job, **shared)`` for each video; exit status 0, or 1 if any failed.

    A bad video (DataError, naming its file) is logged and the next video still runs, so one
    job's log names every bad file of its shard; the job fails all the same, as a one-video job
    does (with ``dataset.on_bad_video: skip`` the index has already left bad videos out).
    """
    status = 0
    for job in jobs:
        status = max(status, run_stage(log, work, config_errors=config_errors, **job, **shared))
    return status


class Once:
    """``load(*args, **kwargs)`` on the first call, the same object on every later one.

    A stage's per-video function takes one as ``load=``: the videos of a shard job then share
    one checkpoint load (all the job's videos use the same checkpoint), while a call without
    it loads for itself, as a one-video hand run does. A failed load raises again on the next
    call (each video's error names the file, as a one-video job's does).
    """

    def __init__(self, load: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._call = (load, args, kwargs)
        self._value: Any = None
        self._done = False

    def __call__(self) -> Any:
        if not self._done:
            load, args, kwargs = self._call
            self._value = load(*args, **kwargs)
            self._done = True
        return self._value
