"""The masks cache (pipeline.masks.cache) and the gt source of stage masks (pipeline.masks.run)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from masks_support import build_inputs

from pipeline.a2d.annotations import read_annotation
from pipeline.config import stage_config
from pipeline.errors import DataError
from pipeline.h5cache import create_cache
from pipeline.index import read_index
from pipeline.masks import run
from pipeline.masks.cache import read_masks_cache, write_masks_cache
from pipeline.masks.config import MasksConfig
from pipeline.masks.regions import Regions

H, W = 19, 27


def some_regions(n: int, seed: int) -> Regions:
    rng = np.random.default_rng(seed)
    return Regions(boxes=rng.uniform(0, 18, (n, 4)).astype(np.float32),
                   scores=rng.uniform(0, 1, n).astype(np.float32),
                   labels=rng.integers(0, 8, n).astype(np.int64),
                   masks=rng.integers(0, 256, (n, H, W)).astype(np.uint8))


def cfg() -> MasksConfig:
    return stage_config(MasksConfig, "masks")


def test_round_trip_with_an_empty_frame(tmp_path):
    regions = {28: some_regions(3, 0), 7: Regions.empty(H, W), 101: some_regions(1, 1)}
    path = tmp_path / "-vid.h5"
    write_masks_cache(path, regions, video="-vid", source="model", config=cfg(), height=H,
                      width=W, checkpoint="model.pt", checkpoint_sha256="ab" * 32)
    back = read_masks_cache(path)
    assert sorted(back) == [7, 28, 101]
    for frame, reg in regions.items():
        got = back[frame]
        for name in ("boxes", "scores", "labels", "masks"):
            want = getattr(reg, name)
            assert getattr(got, name).dtype == want.dtype
            np.testing.assert_array_equal(getattr(got, name), want)
    assert len(back[7]) == 0 and back[7].masks.shape == (0, H, W)
    assert read_masks_cache(path, frames=[101])[101].labels.tolist() == regions[101].labels.tolist()
    with h5py.File(path) as f:  # the documented layout, readable without project code
        assert set(f) == {"00007", "00028", "00101"}
        assert f["00028/masks"].chunks == (1, H, W) and f["00028/masks"].compression == "gzip"
        assert f.attrs["source"] == "model" and f.attrs["video"] == "-vid"
        assert f.attrs["checkpoint"] == "model.pt" and f.attrs["stage"] == "masks"


def test_regions_of_the_wrong_size_or_type_are_refused(tmp_path):
    with pytest.raises(DataError, match="frame 3"):
        write_masks_cache(tmp_path / "x.h5", {3: Regions.empty(H + 1, W)}, video="v",
                          source="gt", config=cfg(), height=H, width=W)
    bad = some_regions(2, 0)
    bad.labels = bad.labels.astype(np.int32)
    with pytest.raises(DataError, match="labels"):
        write_masks_cache(tmp_path / "x.h5", {3: bad}, video="v", source="gt", config=cfg(),
                          height=H, width=W)
    assert not (tmp_path / "x.h5").exists()


def test_reading_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "v.h5"
    write_masks_cache(path, {5: some_regions(2, 0)}, video="v", source="gt", config=cfg(),
                      height=H, width=W)
    with pytest.raises(DataError, match=r"frame\(s\) \[6\]") as err:
        read_masks_cache(path, frames=[6])
    assert str(path) in str(err.value)
    other = tmp_path / "frames.h5"
    with create_cache(other, stage="frames", module="pipeline.masks.cache", config={},
                      format_version=1):
        pass
    with pytest.raises(DataError, match="expected a 'masks' cache"):
        read_masks_cache(other)
    with create_cache(tmp_path / "broken.h5", stage="masks", module="pipeline.masks.cache",
                      config={}, format_version=1) as f:
        f.create_group("00001").create_dataset("boxes", data=np.zeros((0, 4), np.float32))
    with pytest.raises(DataError, match="missing dataset"):
        read_masks_cache(tmp_path / "broken.h5")


def test_gt_source_reproduces_the_mat_instances(tiny_release, tmp_path):
    paths = build_inputs(tiny_release, tmp_path)
    table = read_index(paths["index"])
    for video in table.video.unique():
        out = tmp_path / "masks" / "gt" / f"{video}.h5"
        assert run.main([f"--video={video}", "--source", "gt", "--index", str(paths["index"]),
                         "--release", str(tiny_release), "--out", str(out)]) == 0
        cache = read_masks_cache(out)
        rows = table[table.video == video]
        assert sorted(cache) == sorted(rows.frame.tolist())
        for r in rows.itertuples():
            ann = read_annotation(tiny_release / r.mat)
            reg = cache[int(r.frame)]
            np.testing.assert_array_equal(reg.binary(), ann.masks)
            np.testing.assert_array_equal(np.unique(reg.masks), [0, 255] if len(reg) else [])
            np.testing.assert_array_equal(reg.labels, ann.ids // 10)
            np.testing.assert_array_equal(reg.boxes, ann.boxes)
            assert np.all(reg.scores == 1.0)
        with h5py.File(out) as f:
            assert f.attrs["source"] == "gt"


def test_cli_errors_exit_1_and_name_the_file(tmp_path, caplog):
    index = tmp_path / "index.csv"
    index.write_text("video,frame\n")
    assert run.main(["--video=-x", "--source", "gt", "--index", str(index), "--release",
                     str(tmp_path), "--out", str(tmp_path / "o.h5")]) == 1
    assert str(index) in caplog.text


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--help"])
    assert exit_.value.code == 0 and "--video=ID" in capsys.readouterr().out
