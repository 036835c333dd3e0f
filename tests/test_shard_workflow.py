"""Shard jobs (cluster.videos_per_job): the DAG's job counts, and per-video outputs equal to the
one-video-per-job run (the torch-free part of the DAG: frames, flow dis, masks gt)."""

from __future__ import annotations

import collections
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import yaml

from pipeline.index import read_index
from pipeline.config import load_config
from pipeline.shards import make_shards, planned_videos
from test_workflow import snakemake, write_config

TIMESTAMP_ATTRS = {"created_utc"}


def _with_vpj(tmp: Path, vpj: int) -> Path:
    cfg = yaml.safe_load(write_config(tmp).read_text())
    cfg["cluster"] = {"videos_per_job": vpj}
    path = tmp / f"config_{vpj}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _job_counts(stdout: str) -> collections.Counter:
    """{rule (shard suffix dropped): jobs} of a dry run's job stats."""
    table = stdout[stdout.index("Job stats"):stdout.index("\ntotal")].splitlines()[3:]
    counts = collections.Counter()
    for line in table:
        name, n = line.split()
        counts[re.sub(r"_s[0-9a-f]{16}$", "", name)] += int(n)
    return counts


def _index(workdir: Path, vpj: int) -> list[str]:
    proc = snakemake(workdir, _with_vpj(workdir, vpj), "results/index/frames.csv")
    assert proc.returncode == 0, proc.stderr
    return sorted(read_index(workdir / "results/index/frames.csv").video.unique())


def _per_video_targets(videos: list[str]) -> list[str]:
    return [f"results/{stage}/{v}.h5" for v in videos for stage in ("frames", "flow", "masks/gt")]


def test_dry_run_job_counts_follow_the_shards(tmp_path):
    """A first run (no release, no index yet) is sharded already: the synthetic plan gives the
    videos when Snakemake reads the workflow."""
    config = load_config(write_config(tmp_path))
    videos = sorted(v for v, _ in planned_videos(config, tmp_path / "none.csv")[0])
    for vpj in (1, 2, 4):
        proc = snakemake(tmp_path, _with_vpj(tmp_path, vpj), "-n", *_per_video_targets(videos))
        assert proc.returncode == 0, proc.stderr
        counts = _job_counts(proc.stdout)
        shards = len(make_shards(videos, vpj))
        assert counts["frames"] == counts["flow"] == counts["masks"] == shards, (vpj, counts)
        if vpj > 1:
            assert shards < len(videos)


def _read(path: Path) -> tuple[dict, dict]:
    data, attrs = {}, {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        attrs = {k: v for k, v in f.attrs.items() if k not in TIMESTAMP_ATTRS}
    return data, attrs


def test_shard_outputs_equal_one_video_jobs(tmp_path):
    one, many = tmp_path / "one", tmp_path / "many"
    one.mkdir()
    videos = _index(one, 1)
    shutil.copytree(one, many)
    for workdir, vpj in ((one, 1), (many, 3)):
        proc = snakemake(workdir, _with_vpj(workdir, vpj), *_per_video_targets(videos))
        assert proc.returncode == 0, proc.stderr
    # the default target plans with shard jobs (the timing table reads shard benchmark files)
    proc = snakemake(many, _with_vpj(many, 3), "-n")
    assert proc.returncode == 0, proc.stdout[-3000:]
    # one log per shard job: fewer jobs than videos
    assert len(list((many / "results/logs/flow").glob("*.log"))) == len(make_shards(videos, 3))
    for target in _per_video_targets(videos):
        a, b = _read(one / target), _read(many / target)
        assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys(), target
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=f"{target}:{key}")
        for key in a[1]:
            assert np.array_equal(np.asarray(a[1][key]), np.asarray(b[1][key])), (target, key)
