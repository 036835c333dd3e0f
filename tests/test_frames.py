"""Stage frames: context windows, cache round trip, bad clips, atomic writes."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.config import stage_config
from pipeline.errors import DataError
from pipeline.frames import (FramesCache, FramesConfig, cache_video, context_ids, flow_frame_ids,
                             flow_pair, frames_to_keep, main, read_frames_cache)
from pipeline.index import COLUMNS
from pipeline.video import read_frames

VID = "-x1_clip"  # leading '-': must survive argparse as --video=-x1_clip


def textured_clip(n_frames: int, height: int, width: int, step=(1, 0), seed: int = 0):
    """(n_frames, H, W, 3) uint8 RGB: smooth noise translating by ``step`` = (dx, dy) px/frame."""
    rng = np.random.default_rng(seed)
    pad = 4 + n_frames * max(abs(step[0]), abs(step[1]))
    big = rng.integers(0, 256, (height + 2 * pad, width + 2 * pad, 3)).astype(np.uint8)
    big = cv2.GaussianBlur(big, (0, 0), 1.5)
    return np.stack([big[pad - t * step[1]: pad - t * step[1] + height,
                         pad - t * step[0]: pad - t * step[0] + width] for t in range(n_frames)])


def write_release(root: Path, videos: dict[str, tuple[int, list[int]]], height: int = 40,
                  width: int = 56, listed_frames: dict[str, int] | None = None) -> Path:
    """A release folder with one mp4 per video and the index CSV the frames stage reads.

    ``videos``: id -> (frames in the clip, annotated frame ids); ``listed_frames`` overrides the
    n_frames column (to simulate a videoset.csv that promises more than the clip has).
    """
    (root / "clips320H").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (vid, (n, annotated)) in enumerate(videos.items()):
        clip = root / "clips320H" / f"{vid}.mp4"
        vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 24, (width, height))
        for rgb in textured_clip(n, height, width, seed=i):
            vw.write(np.ascontiguousarray(rgb[..., ::-1]))
        vw.release()
        for a in annotated:
            rows.append({"video": vid, "frame": a, "split": "test", "label": 11,
                         "height": height, "width": width,
                         "n_frames": (listed_frames or {}).get(vid, n),
                         "clip": f"clips320H/{vid}.mp4", "mat": "", "col": "", "instance_h5": ""})
    index = root / "frames.csv"
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(index, index=False)
    return index


def cfg(context: int) -> FramesConfig:
    return stage_config(FramesConfig, "frames", {"context": context})


@pytest.mark.parametrize("frame,context,n,expected", [
    (1, 2, 12, [1, 2, 3]),            # clipped at the start
    (12, 2, 12, [10, 11, 12]),        # clipped at the end
    (6, 2, 12, [4, 5, 6, 7, 8]),
    (6, 0, 12, [6]),
    (2, 5, 3, [1, 2, 3]),             # window wider than the clip
])
def test_context_ids_clip_to_the_clip(frame, context, n, expected):
    assert context_ids(frame, context, n) == expected


def test_frames_to_keep_adds_flow_partners():
    assert flow_pair(5, 12) == (5, 6)
    assert flow_pair(12, 12) == (11, 12)  # last frame: backward pair
    with pytest.raises(ValueError):
        flow_pair(1, 1)
    # context 0: annotated frames and their next frame; last frame pairs with its predecessor
    assert frames_to_keep([3, 12], 0, 12) == [3, 4, 11, 12]
    assert flow_frame_ids([3, 12], 0, 12) == [3, 12]
    # context 1 around 1 and 12: 1,2 and 11,12, plus next frame 3 of frame 2
    assert frames_to_keep([1, 12], 1, 12) == [1, 2, 3, 11, 12]
    assert flow_frame_ids([1, 12], 1, 12) == [1, 2, 11, 12]
    # overlapping windows are merged
    assert frames_to_keep([4, 6], 1, 12) == [3, 4, 5, 6, 7, 8]


def test_schema_default_context():
    assert stage_config(FramesConfig, "frames").context == 1


def test_round_trip_through_cli(tmp_path):
    index = write_release(tmp_path / "Release", {VID: (14, [1, 7, 14])})
    out = tmp_path / "frames" / f"{VID}.h5"
    rc = main(["--release", str(tmp_path / "Release"), "--index", str(index), f"--video={VID}",
               "--out", str(out), "--config-json", '{"context": 2}'])
    assert rc == 0
    cache = read_frames_cache(out)
    expected_ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14]
    assert cache.frame_ids.tolist() == expected_ids
    assert cache.annotated.tolist() == [1, 7, 14]
    assert (cache.video, cache.split, cache.n_frames, cache.context) == (VID, "test", 14, 2)
    assert (cache.height, cache.width) == (40, 56) and cache.fps == pytest.approx(24)
    # exactly the decoder's pixels, for every cached frame
    decoded = read_frames(tmp_path / "Release" / "clips320H" / f"{VID}.mp4", expected_ids)
    for fid in expected_ids:
        np.testing.assert_array_equal(cache.frame(fid), decoded[fid])
    stacked = cache.frames([7, 1, 7])
    assert stacked.shape == (3, 40, 56, 3) and stacked.dtype == np.uint8
    np.testing.assert_array_equal(stacked[0], decoded[7])
    with pytest.raises(KeyError, match="not cached"):
        cache.frame(11)
    # fixed-length windows repeat the border frames
    assert cache.window(1) == [1, 1, 1, 2, 3]
    assert cache.window(14, context=1) == [13, 14, 14]
    # a cache with an open handle pickles (DataLoader workers) and reads in the copy
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.frame(14), decoded[14])
    cache.close()
    clone.close()
    with h5py.File(out) as f:
        assert f["frames"].chunks == (1, 40, 56, 3)
        assert f.attrs["stage"] == "frames" and f.attrs["format_version"] == 1
        assert '"context":2' in f.attrs["config_json"]


def test_frame_past_the_clip_end_names_the_clip(tmp_path):
    root = tmp_path / "Release"
    # the listing promises 30 frames, the clip has 10, frame 12 is annotated
    index = write_release(root, {VID: (10, [2, 12])}, listed_frames={VID: 30})
    with pytest.raises(DataError) as err:
        cache_video(root, index, VID, tmp_path / "o.h5", cfg(1))
    assert err.value.path == str(root / "clips320H" / f"{VID}.mp4")
    assert "12" in err.value.problem
    assert not (tmp_path / "o.h5").exists()


def test_container_over_reporting_its_length_is_tolerated(tmp_path, monkeypatch):
    # the container claims 14 frames, 10 decode; annotated frame 10 decodes, so the video is
    # cached with the real length and flow pair (9, 10) instead of failing
    import pipeline.frames as frames_mod
    from pipeline.video import ClipInfo

    root = tmp_path / "Release"
    index = write_release(root, {VID: (10, [5, 10])}, listed_frames={VID: 14})
    monkeypatch.setattr(frames_mod, "probe_clip", lambda p: ClipInfo(14, 40, 56, 24.0))
    cache = read_frames_cache(cache_video(root, index, VID, tmp_path / "o.h5", cfg(1)))
    assert cache.n_frames == 10
    assert cache.frame_ids.tolist() == [4, 5, 6, 7, 9, 10]  # 7: flow partner of 6


def test_context_window_stops_at_the_clip_end(tmp_path):
    # the last frame is annotated: its window and its flow pair (9, 10) stay inside the clip
    root = tmp_path / "Release"
    index = write_release(root, {VID: (10, [10])})
    cache = read_frames_cache(cache_video(root, index, VID, tmp_path / "o.h5", cfg(3)))
    assert cache.frame_ids.tolist() == [7, 8, 9, 10]


def test_unreadable_mp4_names_the_clip(tmp_path, caplog):
    root = tmp_path / "Release"
    index = write_release(root, {VID: (8, [2])})
    clip = root / "clips320H" / f"{VID}.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # a header and nothing else
    with pytest.raises(DataError) as err:
        cache_video(root, index, VID, tmp_path / "o.h5", cfg(1))
    assert err.value.path == str(clip)
    rc = main(["--release", str(root), "--index", str(index), f"--video={VID}",
               "--out", str(tmp_path / "o.h5")])
    assert rc == 1 and str(clip) in caplog.text
    assert not (tmp_path / "o.h5").exists()


def test_unknown_video_names_the_index(tmp_path):
    root = tmp_path / "Release"
    index = write_release(root, {VID: (8, [2])})
    with pytest.raises(DataError) as err:
        cache_video(root, index, "other", tmp_path / "o.h5", cfg(1))
    assert err.value.path == str(index)


def test_failure_mid_write_leaves_no_file_and_stale_tmp_is_cleaned(tmp_path, monkeypatch):
    root = tmp_path / "Release"
    index = write_release(root, {VID: (8, [3, 6])})
    out = tmp_path / "frames" / f"{VID}.h5"
    real_setitem = h5py.Dataset.__setitem__
    calls = {"n": 0}

    def dying_setitem(self, key, value):
        calls["n"] += 1
        if calls["n"] == 3:  # after two frames are on disk, as if the job were killed
            raise KeyboardInterrupt("killed mid-write")
        return real_setitem(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", dying_setitem)
    with pytest.raises(KeyboardInterrupt):
        cache_video(root, index, VID, out, cfg(1))
    assert not out.exists()
    assert list(out.parent.glob("*")) == []  # no temp file left either
    monkeypatch.undo()
    # a SIGKILLed writer cannot clean up: its temp file is removed by the next run
    stale = out.with_name(out.name + ".tmp.999999")
    stale.write_bytes(b"partial")
    cache_video(root, index, VID, out, cfg(1))
    assert out.is_file() and not stale.exists()
    assert isinstance(read_frames_cache(out), FramesCache)


def test_reading_another_stage_is_a_data_error(tmp_path):
    from pipeline.h5cache import create_cache

    path = tmp_path / "x.h5"
    with create_cache(path, stage="flow", module="pipeline.frames", config={}, format_version=1):
        pass
    with pytest.raises(DataError, match="expected a 'frames' cache"):
        read_frames_cache(path)


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--video" in capsys.readouterr().out


def test_every_video_of_the_synthetic_release(tiny_release, tmp_path):
    """The stage on the release format as written by pipeline.synth and indexed by stage index."""
    from pipeline.index import DatasetConfig, build_index

    table, skipped = build_index(DatasetConfig(str(tiny_release), None, "fail", None))
    assert not skipped
    index = tmp_path / "frames.csv"
    table.to_csv(index, index=False)
    for vid, rows in table.groupby("video"):
        out = cache_video(tiny_release, index, vid, tmp_path / f"{vid}.h5", cfg(1))
        with read_frames_cache(out) as cache:
            assert cache.annotated.tolist() == sorted(rows["frame"])
            assert cache.n_frames == int(rows["n_frames"].iloc[0])
            assert (cache.height, cache.width) == (rows["height"].iloc[0], rows["width"].iloc[0])
            keep = frames_to_keep(cache.annotated.tolist(), 1, cache.n_frames)
            assert cache.frame_ids.tolist() == keep
            decoded = read_frames(tiny_release / rows["clip"].iloc[0], keep)
            for fid in keep:
                np.testing.assert_array_equal(cache.frame(fid), decoded[fid])
