"""Jobs of a dry run of ``config/a2d.yaml`` on an A2D-sized release listing, at several
``cluster.videos_per_job`` values, side by side.

    python benchmarks/shard_jobs.py [--videos-per-job 1 25] [--train 3036 --test 746]

No clip is decoded and nothing runs: the script writes, in a temporary folder, what planning
reads (a ``videoset.csv`` with the real split sizes, one empty ``Annotations/mat/<id>/NNNNN.mat``
per annotated frame, and a frame index as stage ``index`` would write it: 9561 train / 2365 test
annotated frames spread over the videos), then runs ``snakemake -n`` on the default target of
``config/a2d.yaml`` (release path pointed at the listing) once per value and prints the job
stats per rule, the total, the jobs per video and Snakemake's planning time. Goal (issue 12):
<= 1,500 jobs for A2D.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from machine import machine_facts  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.a2d.classes import VALID_PAIRS  # noqa: E402
from pipeline.a2d.videoset import VideoRecord, write_videoset  # noqa: E402
from pipeline.index import COLUMNS  # noqa: E402

ID_CHARS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def write_listing(root: Path, n_train: int, n_test: int, frames: dict[str, int]) -> Path:
    """Release listing + frame index under ``root``; returns the index path."""
    rng = np.random.default_rng(0)
    release = root / "Release"
    ids: set[str] = set()
    while len(ids) < n_train + n_test:
        vid = "".join(rng.choice(ID_CHARS, 11))
        if vid[0] != "-":
            ids.add(vid)
    vids = sorted(ids)
    test = set(rng.choice(vids, n_test, replace=False))
    records, rows = [], []
    for k, vid in enumerate(vids):
        split = "test" if vid in test else "train"
        records.append(VideoRecord(vid, int(VALID_PAIRS[k % len(VALID_PAIRS)]), "00:00:00",
                                   "00:00:05", 320, 568, 150, 1, split == "test"))
        rows.append((vid, split))
    mat = release / "Annotations" / "mat"
    mat.mkdir(parents=True)
    write_videoset(release / "videoset.csv", records)
    table = []
    for split in ("train", "test"):
        # the split's annotated frames spread evenly over its videos (A2D: about 3 per video)
        split_vids = [v for v, s in rows if s == split]
        per = np.full(len(split_vids), frames[split] // len(split_vids))
        per[: frames[split] - per.sum()] += 1
        for vid, n in zip(split_vids, per):
            folder = mat / vid
            folder.mkdir()
            for f in range(1, n + 1):
                frame = 10 * f
                (folder / f"{frame:05d}.mat").touch()
                table.append({"video": vid, "frame": frame, "split": split, "label": 11,
                              "height": 320, "width": 568, "n_frames": 150,
                              "clip": f"clips320H/{vid}.mp4",
                              "mat": f"Annotations/mat/{vid}/{frame:05d}.mat",
                              "col": f"Annotations/col/{vid}/{frame:05d}.png",
                              "instance_h5": ""})
    index = root / "work" / "results" / "index" / "frames.csv"
    index.parent.mkdir(parents=True)
    pd.DataFrame(table, columns=list(COLUMNS)).to_csv(index, index=False)
    return index


def job_stats(stdout: str) -> collections.Counter:
    """{rule (shard suffix dropped): jobs} from a dry run's job stats table."""
    table = stdout[stdout.index("Job stats"):stdout.index("\ntotal")].splitlines()[3:]
    counts: collections.Counter = collections.Counter()
    for line in table:
        name, n = line.split()
        counts[re.sub(r"_s[0-9a-f]{16}$", "", name)] += int(n)
    return counts


def dry_run(workdir: Path, release: Path, videos_per_job: int) -> tuple[collections.Counter, float]:
    overlay = workdir / f"overlay_{videos_per_job}.yaml"
    overlay.write_text(yaml.safe_dump({"dataset": {"release": str(release)},
                                       "cluster": {"videos_per_job": videos_per_job}}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(ROOT / "config" / "a2d.yaml"),
           str(overlay), "--workflow-profile", "none", "--cores", "1", "-n", "--quiet", "rules"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"snakemake failed (videos_per_job {videos_per_job}):\n"
                 + (proc.stdout + proc.stderr)[-4000:])
    return job_stats(proc.stdout + proc.stderr), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos-per-job", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--train", type=int, default=3036, help="train videos (A2D: 3036)")
    parser.add_argument("--test", type=int, default=746, help="test videos (A2D: 746)")
    parser.add_argument("--train-frames", type=int, default=9561)
    parser.add_argument("--test-frames", type=int, default=2365)
    args = parser.parse_args(argv)
    print("# shard_jobs: dry-run jobs of config/a2d.yaml per cluster.videos_per_job")
    print(machine_facts())
    with tempfile.TemporaryDirectory(prefix="actorseg_shard_jobs_") as tmp:
        root = Path(tmp)
        index = write_listing(root, args.train, args.test,
                              {"train": args.train_frames, "test": args.test_frames})
        workdir = index.parents[2]
        results = {v: dry_run(workdir, root / "Release", v) for v in args.videos_per_job}
    videos = args.train + args.test
    print(f"release listing: {args.train} train + {args.test} test videos, "
          f"{args.train_frames} + {args.test_frames} annotated frames\n")
    rules = sorted(set().union(*(c for c, _ in results.values())))
    head = "rule".ljust(28) + "".join(f"vpj={v:<8d}" for v in results)
    print(head)
    for rule in rules:
        print(rule.ljust(28) + "".join(f"{c[rule]:<12d}" for c, _ in results.values()))
    print("total".ljust(28) + "".join(f"{sum(c.values()):<12d}" for c, _ in results.values()))
    print("jobs per video".ljust(28)
          + "".join(f"{sum(c.values()) / videos:<12.2f}" for c, _ in results.values()))
    print("dry-run seconds".ljust(28) + "".join(f"{s:<12.1f}" for _, s in results.values()))
    base = sum(results[args.videos_per_job[0]][0].values())
    for v, (c, _) in results.items():
        total = sum(c.values())
        print(f"videos_per_job {v}: {total} jobs ({total / base:.3f} x vpj "
              f"{args.videos_per_job[0]}); goal <= 1500: {'met' if total <= 1500 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
