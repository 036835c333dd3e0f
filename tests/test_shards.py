"""pipeline.shards: every video in one shard, sizes bounded, membership stable under edits."""

import pytest

from pipeline.shards import make_shards

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
