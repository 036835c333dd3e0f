"""``videoset.csv``: one row per video, no header, 9 fields.

``vid, label, timestart, timeend, height, width, frames, anno, test`` with ``test`` 0 = train,
1 = test. Video ids may start with ``-``: they are never passed unquoted to a shell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.a2d.classes import VALID_PAIRS
from pipeline.errors import DataError

# YouTube-style ids; anything else (a path separator, "..") could resolve outside the dataset.
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TIME = re.compile(r"^\d{1,2}:\d{2}:\d{2}$")
FIELDS = ("vid", "label", "timestart", "timeend", "height", "width", "frames", "anno", "test")


@dataclass(frozen=True)
class VideoRecord:
    vid: str
    label: int
    timestart: str
    timeend: str
    height: int
    width: int
    frames: int
    anno: int
    test: bool

    @property
    def split(self) -> str:
        return "test" if self.test else "train"

    def to_row(self) -> str:
        return ",".join([self.vid, str(self.label), self.timestart, self.timeend, str(self.height),
                         str(self.width), str(self.frames), str(self.anno), str(int(self.test))])


def check_video_id(vid: str, where: str | Path) -> str:
    """Return ``vid`` if it is a plain id; raise DataError naming ``where`` otherwise."""
    if not _VIDEO_ID.match(vid):
        raise DataError(where, f"video id {vid!r} is not a plain id [A-Za-z0-9_-] and could "
                               "resolve outside the dataset folder")
    return vid


def parse_row(fields: list[str], where: str) -> VideoRecord:
    if len(fields) != 9:
        raise DataError(where, f"expected 9 comma-separated fields {FIELDS}, got {len(fields)}")
    vid = check_video_id(fields[0].strip(), where)
    try:
        label, height, width, frames, anno, test = (
            int(fields[i]) for i in (1, 4, 5, 6, 7, 8))
    except ValueError as exc:
        raise DataError(where, f"non-integer field ({exc})") from None
    if label not in VALID_PAIRS:
        raise DataError(where, f"label {label} is not one of the 43 valid actor-action ids")
    if test not in (0, 1):
        raise DataError(where, f"test flag must be 0 (train) or 1 (test), got {test}")
    for name, value in (("height", height), ("width", width), ("frames", frames)):
        if value <= 0:
            raise DataError(where, f"{name} must be positive, got {value}")
    if anno < 0:
        raise DataError(where, f"anno must be >= 0, got {anno}")
    for t in (fields[2], fields[3]):
        if not _TIME.match(t.strip()):
            raise DataError(where, f"time {t!r} is not HH:MM:SS")
    return VideoRecord(vid, label, fields[2].strip(), fields[3].strip(), height, width, frames,
                       anno, bool(test))


def read_videoset(path: str | Path) -> list[VideoRecord]:
    """Parse ``videoset.csv``; raise DataError naming the file and line on a malformed row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "videoset.csv not found")
    records: list[VideoRecord] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rec = parse_row(line.split(","), f"{path}:{lineno}")
        if rec.vid in seen:
            raise DataError(f"{path}:{lineno}", f"duplicate video id {rec.vid!r}")
        seen.add(rec.vid)
        records.append(rec)
    if not records:
        raise DataError(path, "no videos listed")
    return records


def write_videoset(path: str | Path, records: list[VideoRecord]) -> None:
    from pipeline.atomic import write_text_atomic

    write_text_atomic(path, "".join(r.to_row() + "\n" for r in records))
