"""``pipeline.video``: what counts as a video. Real mp4/avi files written by OpenCV pass; a text
file, which FFmpeg's ``tty`` demuxer opens and "decodes" into frames of glyphs, is refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.video import TEXT_CODECS, fourcc_text, probe_clip, probe_video

H, W = 30, 46


@pytest.mark.parametrize("name,fourcc", [("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
def test_real_videos_pass(tmp_path, name, fourcc):
    path = tmp_path / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (W, H))
    for t in range(4):
        writer.write(np.full((H, W, 3), 40 * t, np.uint8))
    writer.release()
    info = probe_video(path)
    assert (info.n_frames, info.height, info.width) == (4, H, W)
    assert info.codec and info.codec.lower() not in TEXT_CODECS


@pytest.mark.parametrize("name", ["readme.txt", "notes.nfo"])
def test_text_file_is_not_a_video(tmp_path, name):
    path = tmp_path / name
    path.write_text("This is a README.\nIt has lines of text.\n" * 40)
    # the premise: OpenCV (FFmpeg) opens it and decodes frames from it
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    codec = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
    cap.release()
    assert ok and frame.size > 0 and codec == "ansi"
    for probe in (probe_clip, probe_video):
        with pytest.raises(DataError, match=r"not a video: FFmpeg reads it as text") as err:
            probe(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20],
                         ids=["empty", "garbage"])
def test_unreadable_file_refused(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(DataError, match="unreadable video"):
        probe_video(path)


def test_missing_file_refused(tmp_path):
    with pytest.raises(DataError, match="clip not found"):
        probe_video(tmp_path / "nothing.mp4")


def test_fourcc_text():
    assert fourcc_text(cv2.VideoWriter_fourcc(*"FMP4")) == "FMP4"
    assert fourcc_text(0) == ""
