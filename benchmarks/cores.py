"""Wall time of ``snakemake --cores 2`` vs ``--cores 1`` on the embedded default, side by side.

    python benchmarks/cores.py [--target all_flow] [--videos 12] [--rounds 1]

Each run starts in a fresh temporary working folder (nothing cached) and builds ``--target``
of the embedded default (``config.yaml``) with ``--config synthetic={...videos: N...}`` so one
run stays within a few minutes: synthetic release, index, then one frames and one flow job per
video. The core counts alternate (1, 2, 1, 2, ...) over ``--rounds`` rounds so a change of the
machine's load hits both alike; the median wall times and their ratio are printed.

What it shows: how much of the per-video work runs in parallel. Per-video jobs are short
(process start + imports + a few frames), so Snakemake's own scheduling and each job's Python
start-up are a large share; on a shared, loaded machine the second core is also not free.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from machine import machine_facts  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]




def one_run(cores: int, target: str, synthetic: dict) -> tuple[float, int]:
    """Wall seconds of one fresh run, and the number of jobs it ran."""
    with tempfile.TemporaryDirectory(prefix=f"actorseg_cores{cores}_") as tmp:
        cfg = Path(tmp) / "override.yaml"
        cfg.write_text(yaml.safe_dump({"synthetic": synthetic}))
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
               "--directory", tmp, "--configfile", str(ROOT / "config.yaml"), str(cfg),
               "--workflow-profile", "none", "--scheduler", "greedy", "--cores", str(cores),
               target]
        env = {**os.environ,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"snakemake --cores {cores} failed")
        jobs = sum(1 for _ in (Path(tmp) / "results/benchmarks").rglob("*.tsv"))
    return wall, jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="all_flow")
    parser.add_argument("--videos", type=int, default=12, help="synthetic.videos override")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    synthetic = dict(yaml.safe_load((ROOT / "config.yaml").read_text())["synthetic"],
                     videos=args.videos)
    print("# cores: snakemake --cores 2 vs --cores 1, fresh workdir each run")
    print(machine_facts())
    print(f"target: {args.target}; config: config.yaml + synthetic {json.dumps(synthetic)}")
    walls: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for cores in (1, 2):
            wall, jobs = one_run(cores, args.target, synthetic)
            walls[cores].append(wall)
            print(f"round {r + 1}: --cores {cores}: {wall:6.1f} s ({jobs} jobs with a benchmark)",
                  flush=True)
    m1, m2 = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"\nmedian wall: --cores 1 {m1:.1f} s, --cores 2 {m2:.1f} s; "
          f"speed-up (cores 1 / cores 2) = {m1 / m2:.2f}")
    load = os.getloadavg()
    print(f"load average (1/5/15 min) at end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
