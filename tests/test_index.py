"""The frame index: counts read from the files, and each bad listing named."""

import shutil

import cv2
import numpy as np
import pytest

from pipeline.a2d.annotations import FrameAnnotation, write_col_png, write_mat
from pipeline.a2d.videoset import VideoRecord, write_videoset
from pipeline.config import stage_config
from pipeline.errors import DataError
from pipeline.index import DatasetConfig, build_index, main, read_index


def _clip(path, n, h=16, w=24):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
    for i in range(n):
        writer.write(np.full((h, w, 3), i * 10 % 255, np.uint8))
    writer.release()


def make_release(root, videos):
    """videos: list of (vid, test, n_frames, annotated frame ids)."""
    recs = []
    for vid, test, n, frames in videos:
        _clip(root / "clips320H" / f"{vid}.mp4", n)
        for fr in frames:
            label = np.zeros((16, 24), np.uint8)
            label[2:5, 3:9] = 11
            ann = FrameAnnotation(label, (label > 0)[None], np.array([[3, 2, 9, 5]], np.float32),
                                  np.array([11]))
            write_mat(root / "Annotations/mat" / vid / f"{fr:05d}.mat", ann)
            write_col_png(root / "Annotations/col" / vid / f"{fr:05d}.png", label)
        recs.append(VideoRecord(vid, 11, "00:00:00", "00:00:01", 16, 24, n, len(frames), test))
    write_videoset(root / "videoset.csv", recs)
    return root


def cfg(root, **kw):
    return stage_config(DatasetConfig, "dataset", {"release": str(root), **kw})


@pytest.fixture
def small_release(tmp_path):
    return make_release(tmp_path / "Release", [
        ("-lead1", False, 10, [2, 5, 9]), ("b", True, 8, [4]), ("c_c", False, 6, [1, 6])])


def test_index_counts_from_files(small_release, tmp_path):
    out = tmp_path / "idx" / "frames.csv"
    assert main(["--release", str(small_release), "--out", str(out)]) == 0
    table = read_index(out)
    assert list(table.video) == ["-lead1"] * 3 + ["b"] + ["c_c"] * 2
    assert list(table.frame) == [2, 5, 9, 4, 1, 6]
    assert table.groupby("split").size().to_dict() == {"test": 1, "train": 5}
    assert table.loc[0, "mat"] == "Annotations/mat/-lead1/00002.mat"
    assert (small_release / table.loc[3, "clip"]).is_file()


def test_index_of_synthetic_release(tiny_release, tmp_path):
    table, skipped = build_index(cfg(tiny_release))
    assert not skipped
    assert set(table.split) == {"train", "test"}
    n_mats = len(list((tiny_release / "Annotations" / "mat").glob("*/*.mat")))
    assert len(table) == n_mats


def test_frame_past_clip_end(tmp_path):
    root = make_release(tmp_path / "R", [("a", False, 5, [3]), ("b", False, 6, [6])])
    shutil.copy(root / "Annotations/mat/a/00003.mat", root / "Annotations/mat/a/00007.mat")
    with pytest.raises(DataError, match=r"a/00007.mat: annotated frame 7 is past the clip's end"):
        build_index(cfg(root))
    table, skipped = build_index(cfg(root, on_bad_video="skip"))
    assert list(table.video) == ["b"] and len(skipped) == 1


def test_missing_and_unreadable_clip(tmp_path):
    root = make_release(tmp_path / "R", [("a", False, 5, [3]), ("b", False, 6, [6])])
    (root / "clips320H/a.mp4").unlink()
    with pytest.raises(DataError, match=r"a.mp4: missing clip of video 'a'"):
        build_index(cfg(root))
    (root / "clips320H/a.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"a.mp4: unreadable video"):
        build_index(cfg(root))


def test_stray_file_and_cli_error(tmp_path, caplog):
    root = make_release(tmp_path / "R", [("a", False, 5, [3])])
    (root / "Annotations/mat/a/notes.txt").write_text("x")
    out = tmp_path / "frames.csv"
    assert main(["--release", str(root), "--out", str(out)]) == 1
    assert "notes.txt: unexpected file" in caplog.text
    assert not out.exists()
