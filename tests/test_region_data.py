"""Region-model data: dataset items on the tiny synthetic release, feature cache round trip."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from pipeline.a2d.annotations import read_annotation
from pipeline.a2d.classes import decode
from pipeline.errors import DataError
from pipeline.index import read_index
from pipeline.region.data import RegionFrames, collate, frame_records
from pipeline.region.feature_cache import (
    bytes_per_frame,
    read_feature_cache,
    write_feature_cache,
)
from pipeline.training.schedule import batch_indices, lr_factor
from region_support import build_caches

SIZE = (37, 51)  # odd on purpose: nothing may assume multiples of the stride


@pytest.fixture(scope="module")
def caches(tiny_release, tmp_path_factory):
    return build_caches(tiny_release, tmp_path_factory.mktemp("region_caches"))


def test_items_have_documented_shapes_and_dtypes(caches):
    recs = frame_records(read_index(caches["index"]), caches["release"], split="train")
    ds = RegionFrames(recs, SIZE, frames_dir=caches["frames"], flow_dir=caches["flow"],
                      mask_dirs=[caches["masks"] / "gt", caches["masks"] / "model"])
    assert len(ds) == len(recs) > 0
    item = ds[0]
    assert item["rgb"].shape == (3, *SIZE) and item["rgb"].dtype == torch.float32
    assert item["flow"].shape == (3, *SIZE) and item["flow"].dtype == torch.float32
    for key in ("rgb", "flow"):
        assert 0.0 <= float(item[key].min()) and float(item[key].max()) <= 1.0
    assert item["actor"].shape == SIZE and item["actor"].dtype == torch.int64
    assert item["action"].shape == SIZE and item["action"].dtype == torch.int64
    assert int(item["actor"].max()) <= 7 and int(item["action"].max()) <= 9
    n = item["boxes"].shape[0]
    assert n >= 2 and item["boxes"].shape == (n, 4) and item["boxes"].dtype == torch.float32
    assert item["masks"].shape == (n, *SIZE) and item["masks"].dtype == torch.float32
    assert 0.0 <= float(item["masks"].min()) and float(item["masks"].max()) <= 1.0
    assert item["region_labels"].shape == (n,)
    # boxes are in input pixels, inside the frame
    assert float(item["boxes"][:, 2].max()) <= SIZE[1] + 1e-3
    assert float(item["boxes"][:, 3].max()) <= SIZE[0] + 1e-3
    # labels are the GT, resized with nearest neighbour (same class set)
    gt = read_annotation(recs[0].mat).label
    assert tuple(item["native_size"].tolist()) == gt.shape
    actor, _ = decode(gt)
    assert set(np.unique(item["actor"].numpy())) <= set(np.unique(actor))
    batch = collate([ds[0], ds[1]])
    assert batch["rgb"].shape == (2, 3, *SIZE) and len(batch["masks"]) == 2
    assert batch["video"] == [recs[0].video, recs[1].video]


def test_dataset_pickles_without_open_handles(caches):
    recs = frame_records(read_index(caches["index"]), caches["release"])
    ds = RegionFrames(recs, SIZE, frames_dir=caches["frames"], mask_dirs=[caches["masks"] / "gt"])
    first = ds[0]  # opens handles in this process
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    again = clone[0]
    assert torch.equal(first["rgb"], again["rgb"]) and torch.equal(first["masks"], again["masks"])


def test_min_mask_score_drops_generated_regions_only(caches):
    recs = frame_records(read_index(caches["index"]), caches["release"])[:1]
    low = RegionFrames(recs, SIZE, mask_dirs=[caches["masks"] / "gt", caches["masks"] / "model"],
                       labels=False)[0]
    high = RegionFrames(recs, SIZE, mask_dirs=[caches["masks"] / "gt", caches["masks"] / "model"],
                        labels=False, min_mask_score=0.5)[0]
    assert high["boxes"].shape[0] == low["boxes"].shape[0] - 1  # the 0.3 spurious region


def test_missing_cache_names_the_file(caches, tmp_path):
    recs = frame_records(read_index(caches["index"]), caches["release"])
    with pytest.raises(DataError, match=str(tmp_path)):
        RegionFrames(recs, SIZE, frames_dir=tmp_path)


def test_feature_cache_round_trip_with_attrs(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 5, 7, 9)).astype(np.float32)
    path = tmp_path / "-vid.h5"
    attrs = dict(video="-vid", split="test", streams="rgbflow", input_height=51,
                 input_width=69, native_height=48, native_width=64, stride=8, channels=5,
                 stage1="s1.pt", stage1_sha256="ab" * 32)
    write_feature_cache(path, features=feats, frame_ids=[4, 9, 13], config={"k": 1}, **attrs)
    cache = read_feature_cache(path)
    assert cache.frame_ids.tolist() == [4, 9, 13]
    np.testing.assert_array_equal(cache.features(9), feats[1].astype(np.float16).astype(np.float32))
    assert cache.input_size == (51, 69) and cache.native_size == (48, 64)
    assert cache.streams == "rgbflow" and cache.channels == 5 and cache.split == "test"
    cache.close()
    with h5py.File(path, "r", locking=False) as f:
        ds = f["features"]
        assert ds.dtype == np.float16 and ds.chunks == (1, 5, 7, 9) and ds.compression is None
        for key in ("format_version", "stage", "config_sha256", "code_hash", "created_utc"):
            assert key in f.attrs
        assert f.attrs["stage"] == "features"
    with pytest.raises(KeyError, match="frame 5"):
        read_feature_cache(path).features(5)
    with pytest.raises(ValueError, match="non-finite"):
        write_feature_cache(tmp_path / "bad.h5", features=feats * 1e6, frame_ids=[1, 2, 3],
                            config={}, **attrs)
    assert not (tmp_path / "bad.h5").exists()


def test_bytes_per_frame_of_the_paper_configuration():
    # two ResNet-101 streams (2 x 2048) on 320 x 568 at stride 8: 40 x 71 positions, float16
    assert bytes_per_frame(4096, 320, 568) == 4096 * 40 * 71 * 2 == 23_265_280


def test_batch_order_is_a_function_of_seed_and_step():
    n, b = 7, 3
    seen = [i for s in range(7) for i in batch_indices(n, b, seed=5, step=s)]
    # every epoch of 7 consecutive draws is a permutation
    assert sorted(seen[:7]) == list(range(7)) and sorted(seen[7:14]) == list(range(7))
    assert batch_indices(n, b, 5, 4) == batch_indices(n, b, 5, 4)
    assert batch_indices(n, b, 5, 4) != batch_indices(n, b, 6, 4)


def test_lr_policies():
    assert lr_factor("constant", 50, 100) == 1.0
    assert lr_factor("poly", 0, 100) == 1.0 and lr_factor("poly", 100, 100) == 0.0
    assert lr_factor("poly", 50, 100) == pytest.approx(0.5 ** 0.9)
    with pytest.raises(ValueError):
        lr_factor("step", 1, 10)


def test_separate_sources_give_one_item_per_frame_and_source(caches):
    recs = frame_records(read_index(caches["index"]), caches["release"])[:2]
    dirs = [caches["masks"] / "gt", caches["masks"] / "model"]
    concat = RegionFrames(recs, SIZE, mask_dirs=dirs, labels=False)
    separate = RegionFrames(recs, SIZE, mask_dirs=dirs, labels=False, combine="separate")
    alone = [RegionFrames(recs, SIZE, mask_dirs=[d], labels=False) for d in dirs]
    assert len(concat) == 2 and len(separate) == 4
    for i in range(2):
        # item 2i: frame i with the GT regions only, 2i + 1: with the generated ones only
        for s in range(2):
            got, want = separate[2 * i + s], alone[s][i]
            assert (got["video"], got["frame"]) == (recs[i].video, recs[i].frame)
            assert torch.equal(got["boxes"], want["boxes"])
            assert torch.equal(got["masks"], want["masks"])
        assert concat[i]["boxes"].shape[0] == sum(a[i]["boxes"].shape[0] for a in alone)
    with pytest.raises(ValueError, match="combine"):
        RegionFrames(recs, SIZE, mask_dirs=dirs, combine="union")
