"""Decoding clips with OpenCV. Frame ids are 1-based, as in A2D (ffmpeg's image2 numbering)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import DataError


#: Codecs of FFmpeg's text-mode demuxers (``tty``: .txt/.nfo/.asc/...; XBIN): they render any
#: text file as "video" frames of glyphs, so OpenCV opens and decodes a renamed README. OpenCV
#: reports a codec without a 4-character tag by its FFmpeg name, which is how these show up.
TEXT_CODECS = frozenset({"ansi", "xbin"})


@dataclass(frozen=True)
class ClipInfo:
    n_frames: int
    height: int
    width: int
    fps: float
    codec: str = ""  # the video stream's FourCC (or FFmpeg codec name) as OpenCV reports it


def fourcc_text(value: float) -> str:
    """OpenCV's ``CAP_PROP_FOURCC`` double as its four characters (``"FMP4"``, ``"ansi"``)."""
    code = int(value)
    return "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")


def probe_clip(path: str | Path) -> ClipInfo:
    """Container metadata of a clip (frame count as reported by the container).

    Raises DataError if the file is missing, OpenCV cannot open it, or its stream is text that
    FFmpeg renders as glyphs (:data:`TEXT_CODECS`), not a video.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "clip not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(path, "unreadable video (OpenCV cannot open it)")
        info = ClipInfo(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                        float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                        fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)))
    finally:
        cap.release()
    if info.codec.lower() in TEXT_CODECS:
        raise DataError(path, f"not a video: FFmpeg reads it as text rendered to frames (codec "
                              f"{info.codec!r}); give a video file (mp4, avi, ...)")
    if info.n_frames <= 0 or info.height <= 0 or info.width <= 0:
        raise DataError(path, f"unreadable video (reports {info.n_frames} frames of "
                              f"{info.height}x{info.width})")
    return info


def probe_video(path: str | Path) -> ClipInfo:
    """:func:`probe_clip`, then decode the first frame and check it has the reported size: a
    file is taken as a video only when a real video stream yields a real frame.

    Raises:
        DataError: naming the file, as :func:`probe_clip`, or when no frame decodes or the first
            frame's size differs from the container's.
    """
    info = probe_clip(path)
    frames, _ = decode_frames(path, [1])
    if 1 not in frames:
        raise DataError(path, f"unreadable video (the container reports {info.n_frames} frames, "
                              "none decodes)")
    if frames[1].shape[:2] != (info.height, info.width):
        raise DataError(path, f"unreadable video (first frame {frames[1].shape[:2]}, the "
                              f"container reports {info.height}x{info.width})")
    return info


def decode_frames(path: str | Path, frame_ids: Iterable[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode the clip once, sequentially, keeping the requested 1-based frames that exist.

    Returns:
        ``({frame_id: (H, W, 3) uint8 RGB}, n_decoded)`` where ``n_decoded`` is the number of
        frames decoded before the clip ended or the last requested frame was reached. Requested
        ids past the clip's real end are simply absent (containers may over-report length).

    Raises:
        DataError: naming the clip, if it is missing or cannot be opened.
    """
    path = Path(path)
    wanted = sorted(set(int(i) for i in frame_ids))
    if wanted and wanted[0] < 1:
        raise DataError(path, f"frame ids are 1-based, got {wanted[0]}")
    if not path.is_file():
        raise DataError(path, "clip not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(path, "unreadable video (OpenCV cannot open it)")
    out: dict[int, np.ndarray] = {}
    keep = set(wanted)
    last = wanted[-1] if wanted else 0
    index = 0
    try:
        while index < last:
            ok, bgr = cap.read()
            if not ok:
                break
            index += 1
            if index in keep:
                out[index] = np.ascontiguousarray(bgr[..., ::-1])
    finally:
        cap.release()
    return out, index


def read_frames(path: str | Path, frame_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Decode the clip once and return every requested 1-based frame.

    Returns:
        ``{frame_id: (H, W, 3) uint8 RGB}`` for every requested id.

    Raises:
        DataError: naming the clip, if it cannot be decoded or ends before a requested frame.
    """
    wanted = sorted(set(int(i) for i in frame_ids))
    out, n_decoded = decode_frames(path, wanted)
    if wanted and n_decoded < wanted[-1]:
        raise DataError(path, f"clip has {n_decoded} decodable frames but frame {wanted[-1]} "
                              "is needed")
    return out
