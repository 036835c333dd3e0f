"""pipeline.shards: every video in one shard, sizes bounded, membership stable under edits."""

import shutil

import pytest
from conftest import TINY_SYNTH

from pipeline.config import defaults
from pipeline.index import DatasetConfig, build_index
from pipeline.shards import make_shards, planned_videos

VIDEOS = [f"v{i:04d}" for i in range(300)] + ["-dash_id", "_x9"]


def _members(shards):
    return {name: tuple(vids) for name, vids in shards.items()}


@pytest.mark.parametrize("per_job", [1, 2, 7, 25])
def test_every_video_in_exactly_one_shard_of_bounded_size(per_job):
    shards = make_shards(VIDEOS, per_job)
    flat = [v for vids in shards.values() for v in vids]
    assert sorted(flat) == sorted(VIDEOS)
    assert max(len(v) for v in shards.values()) <= 2 * per_job
    # mean size near per_job (boundaries are 1 in per_job; long runs are cut)
    assert 0.4 * per_job <= len(VIDEOS) / len(shards) <= 1.6 * per_job


def test_one_video_per_job_is_one_shard_per_video_named_by_it():
    assert make_shards(["b", "-a"], 1) == {"b": ["b"], "-a": ["-a"]} or \
        make_shards(["b", "-a"], 1) == {"-a": ["-a"], "b": ["b"]}
    assert set(make_shards(VIDEOS, 1)) == set(VIDEOS)


def test_order_of_input_does_not_matter():
    assert make_shards(VIDEOS, 5) == make_shards(list(reversed(VIDEOS)), 5)


@pytest.mark.parametrize("per_job", [3, 10])
@pytest.mark.parametrize("new", ["added_0", "added_1", "added_2", "zz9", "-new"])
def test_adding_a_video_changes_one_shard(per_job, new):
    before, after = _members(make_shards(VIDEOS, per_job)), _members(make_shards(VIDEOS + [new], per_job))
    changed_before = {k: v for k, v in before.items() if after.get(k) != v}
    changed_after = {k: v for k, v in after.items() if before.get(k) != v}
    # the video joins one shard, or (a boundary video) splits one; a cut run (longer than
    # 2 * per_job) is re-cut, which stays inside that run
    assert any(new in v for v in changed_after.values())
    moved = {x for v in changed_before.values() for x in v}
    assert moved == {x for v in changed_after.values() for x in v} - {new}
    assert len(moved) <= 4 * per_job
    assert len(changed_before) <= 2


def test_removing_a_video_changes_one_shard():
    before = _members(make_shards(VIDEOS, 6))
    after = _members(make_shards([v for v in VIDEOS if v != "v0150"], 6))
    changed = {k for k in before if after.get(k) != before[k]}
    assert 1 <= len(changed) <= 2
    assert len(set(before) ^ set(after)) <= 2


def test_bad_size_rejected():
    with pytest.raises(ValueError, match="videos_per_job"):
        make_shards(VIDEOS, 0)


# -- planned_videos: the shard plan before the index exists ----------------------------------------

def _config(release, **dataset):
    cfg = defaults()
    cfg["synthetic"].update(TINY_SYNTH)
    cfg["dataset"].update({"release": str(release), **dataset})
    return cfg


def _indexed(release, **dataset):
    cfg = _config(release, **dataset)["dataset"]
    table, _ = build_index(DatasetConfig(cfg["release"], None, cfg["on_bad_video"],
                                         cfg["max_videos"]))
    return sorted(set(table[["video", "split"]].itertuples(index=False, name=None)))


@pytest.mark.parametrize("max_videos", [None, 4])
def test_synthetic_plan_is_the_index(tiny_release, tmp_path, max_videos):
    """Before the release exists (a first run) the plan gives the index's videos and splits."""
    cfg = _config(tmp_path / "not_yet", max_videos=max_videos)
    got, source = planned_videos(cfg, tmp_path / "no_index.csv")
    assert source == "synthetic plan"
    assert sorted(got) == _indexed(tiny_release, max_videos=max_videos)


def test_release_listing_is_the_index(tiny_release, tmp_path):
    """A real release (synthetic off, on_bad_video fail): videoset.csv's annotated videos; a
    listed video without annotation files gets no index row, and no shard."""
    release = tmp_path / "Release"
    shutil.copytree(tiny_release, release)
    dropped = sorted(p.name for p in (release / "Annotations" / "mat").iterdir())[0]
    shutil.rmtree(release / "Annotations" / "mat" / dropped)
    cfg = _config(release)
    cfg["synthetic"]["enabled"] = False
    got, source = planned_videos(cfg, tmp_path / "no_index.csv")
    assert source == "videoset.csv"
    assert sorted(got) == _indexed(release) and dropped not in {v for v, _ in got}


def test_skip_mode_plans_from_the_index_only(tiny_release, tmp_path):
    cfg = _config(tiny_release, on_bad_video="skip")
    cfg["synthetic"]["enabled"] = False
    assert planned_videos(cfg, tmp_path / "no_index.csv")[0] is None
    index = tmp_path / "frames.csv"
    table, _ = build_index(DatasetConfig(str(tiny_release), None, "skip", None))
    table.to_csv(index, index=False)
    got, source = planned_videos(cfg, index)
    assert source == "frame index" and sorted(got) == _indexed(tiny_release)
