"""Summed job CPU time and wall time of a run at ``cluster.videos_per_job`` 1 and at a shard
size, side by side, from Snakemake's benchmark TSVs (issue 12 goal: >= 40% less CPU time).

    python benchmarks/shard_cpu.py                       # the embedded default, vpj 1 vs 4
    python benchmarks/shard_cpu.py --videos-per-job 1 4 --target all --configfile extra.yaml

Each value runs in its own fresh temporary working folder, one after the other (same machine,
same target, nothing shared but Snakemake's conda-free environment), then every
``results/benchmarks/**/*.tsv`` of the run is read: ``cpu_time`` and ``s`` (wall) summed over
all jobs, and over the per-video stages alone (rules frames, flow, masks, region_features,
predict_*, e2e_predict*: what the shards change). Also printed: the jobs, the run's own wall
time (Snakemake included) and the ratios to the first value. ``--configfile`` files are merged
over the embedded config.yaml (e.g. tiny stages for a quick check).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from machine import machine_facts  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
PER_VIDEO = ("frames", "flow", "masks", "region_features", "predict_baseline", "predict_region",
             "e2e_predict", "e2e_predict_zero_shot")


def summed(bench: Path) -> dict[str, float]:
    """{jobs, cpu, wall, video_jobs, video_cpu, video_wall} over a run's benchmark files."""
    out = dict.fromkeys(("jobs", "cpu", "wall", "video_jobs", "video_cpu", "video_wall"), 0.0)
    for path in sorted(bench.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        cpu = float(pd.to_numeric(table["cpu_time"], errors="coerce").fillna(0).mean())
        wall = float(pd.to_numeric(table["s"], errors="coerce").mean())
        per_video = path.relative_to(bench).parts[0] in PER_VIDEO
        for prefix in ("", "video_") if per_video else ("",):
            out[prefix + "jobs"] += 1
            out[prefix + "cpu"] += cpu
            out[prefix + "wall"] += wall
    return out


def run(videos_per_job: int, target: list[str], configfiles: list[Path], cores: int,
        keep: Path | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"actorseg_vpj{videos_per_job}_") as tmp:
        work = keep / f"vpj{videos_per_job}" if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        overlay = work / "vpj.yaml"
        overlay.write_text(f"cluster:\n  videos_per_job: {videos_per_job}\n")
        cmd = [sys.executable, "-m", "snakemake", *target,
               "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(work), "--configfile", str(ROOT / "config.yaml"),
               *map(str, configfiles), str(overlay), "--workflow-profile", "none",
               "--cores", str(cores), "--scheduler", "greedy", "--quiet", "rules"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"snakemake failed at videos_per_job {videos_per_job} ({work}):\n"
                     + (proc.stdout + proc.stderr)[-4000:])
        return {**summed(work / "results" / "benchmarks"), "run_wall": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos-per-job", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--target", nargs="+", default=["all"])
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="extra config files merged over config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the workdirs under this folder")
    args = parser.parse_args(argv)
    print("# shard_cpu: summed job CPU and wall time per cluster.videos_per_job")
    print(machine_facts())
    print(f"target: {' '.join(args.target)}; config: config.yaml "
          f"{' '.join(map(str, args.configfile))}; cores {args.cores}\n")
    rows = {v: run(v, args.target, args.configfile, args.cores, args.keep)
            for v in args.videos_per_job}
    base = rows[args.videos_per_job[0]]
    keys = [("jobs", "jobs (benchmark files)"), ("cpu", "job CPU s, all"),
            ("wall", "job wall s, all"), ("video_jobs", "per-video-stage jobs"),
            ("video_cpu", "job CPU s, per-video stages"), ("video_wall", "job wall s, per-video"),
            ("run_wall", "snakemake run wall s")]
    print("quantity".ljust(32) + "".join(f"vpj={v:<10d}ratio     " for v in rows))
    for key, label in keys:
        print(label.ljust(32) + "".join(
            f"{r[key]:<14.1f}{(r[key] / base[key] if base[key] else float('nan')):<10.3f}"
            for r in rows.values()))
    for v, r in rows.items():
        if v != args.videos_per_job[0] and base["cpu"]:
            print(f"videos_per_job {v}: job CPU time {100 * (1 - r['cpu'] / base['cpu']):.1f}% "
                  f"less than at {args.videos_per_job[0]} (goal >= 40%)")
    print("\nload average at end: %.2f / %.2f / %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
