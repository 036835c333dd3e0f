"""Frames per second of each stage on this machine, from the Snakemake benchmark TSVs of a run.

    python benchmarks/stage_throughput.py [--workdir DIR] [--cores 2] [--config KEY=VALUE ...]
    python benchmarks/stage_throughput.py --workdir DIR --no-run    # only read an earlier run

Shorter training for a loaded machine (per-frame inference times do not depend on it):
    --config 'synthetic={videos: 12}' 'segmenter={iterations: 20}' \
        'region_model={stage1: {iterations: 10}, stage2: {iterations: 10}}'

Runs the embedded default (``config.yaml``) in ``--workdir`` (a fresh temporary folder by
default) up to the Dang et al. predictions of the two-stream region model on the segmenter's
masks (``results/predictions/region_rgbflow_model``) and every video's flow and masks, then
reads ``results/benchmarks/<rule>/...tsv`` (Snakemake's ``benchmark:`` wall seconds per job) and
the frame counts of the index and the caches:

- per-video stages: frames per second = frames handled / job seconds, summed over the jobs
  (frames: cached frames; flow: flow fields; masks, features, predict: annotated frames);
- training stages: training frames per second = iterations x batch size / job seconds.

Job seconds include the process start (Python, torch imports: about 1-5 s per job on a loaded
CPU), which dominates the tiny per-video jobs of the synthetic default; the paper's
per-frame times (Dang et al. 2018, section 4 "Computational complexity": FlowNet 350 ms, FCIS
300 ms, region network 450 ms per frame, K80 GPU, 320-high A2D frames) are printed beside flow,
masks and predict_region for scale only: other hardware, models and frame sizes.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.index import read_index  # noqa: E402
from machine import machine_facts  # benchmarks/machine.py

PAPER_MS = {"flow": 350, "masks": 300, "predict_region": 450}  # Dang et al. 2018, section 4




def read_tsv_seconds(path: Path) -> float:
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return sum(float(r["s"]) for r in rows) / len(rows)


def h5_len(path: Path, dataset: str) -> int:
    with h5py.File(path, "r") as f:
        return len(f[dataset])


def run_workflow(workdir: Path, cores: int, overrides: list[str]) -> float:
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(ROOT / "config.yaml"),
            "--workflow-profile", "none", "--cores", str(cores), "--scheduler", "greedy"]
    # snakemake --config reads nested values as strings: pass the overrides as a config file
    extra: dict = {}
    for item in overrides:
        key, value = item.split("=", 1)
        merge(extra, {key: yaml.safe_load(value)})
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "override.yaml").write_text(yaml.safe_dump(extra))
    base.insert(base.index("--workflow-profile"), str(workdir / "override.yaml"))
    tail: list[str] = []
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    subprocess.run(base + ["results/index/frames.csv"] + tail, check=True, env=env,
                   capture_output=True)
    test = sorted(read_index(workdir / "results/index/frames.csv").query("split == 'test'")
                  .video.unique())
    targets = ["all_flow", "all_masks"] + [
        f"results/predictions/region_rgbflow_model/{v}.h5" for v in test]
    proc = subprocess.run(base + targets + tail, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"snakemake failed in {workdir}")
    return time.perf_counter() - t0


def per_video(workdir: Path, rule: str, sub: str, count) -> tuple[int, int, float] | None:
    """(jobs, frames, seconds) of a per-video rule whose TSVs are under benchmarks/<sub>."""
    tsvs = sorted((workdir / "results/benchmarks" / sub).glob("*.tsv"))
    if not tsvs:
        return None
    frames = seconds = 0.0
    for tsv in tsvs:
        frames += count(tsv.stem)
        seconds += read_tsv_seconds(tsv)
    return len(tsvs), int(frames), seconds


def merge(base: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="run folder (default: a fresh temp folder)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the embedded default, YAML values (given to "
                             "snakemake as a second --configfile)")
    parser.add_argument("--no-run", action="store_true", help="only read an earlier run")
    args = parser.parse_args(argv)
    print("# stage_throughput: frames per second of each stage (embedded default)")
    print(machine_facts())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="actorseg_stages_"))
    if not args.no_run:
        wall = run_workflow(workdir, args.cores, args.config)
        print(f"run: {workdir}, --cores {args.cores}, wall {wall:.1f} s")
    res = workdir / "results"
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for item in args.config:  # the same deep merge as snakemake --config
        key, value = item.split("=", 1)
        merge(cfg, {key: yaml.safe_load(value)})
    index = read_index(res / "index/frames.csv")
    annotated = index.groupby("video").size().to_dict()
    rows: list[tuple[str, int, int, float]] = []

    def add(rule: str, item):
        if item is not None:
            rows.append((rule, *item))

    add("frames", per_video(workdir, "frames", "frames",
                            lambda v: h5_len(res / f"frames/{v}.h5", "frame_ids")))
    add("flow", per_video(workdir, "flow", "flow",
                          lambda v: h5_len(res / f"flow/{v}.h5", "frame_ids")))
    for src in ("model", "gt", "checkpoint"):
        add(f"masks ({src})", per_video(workdir, "masks", f"masks/{src}",
                                        lambda v: annotated[v]))
    add("region_features (rgbflow)", per_video(workdir, "region_features",
                                               "region_features/rgbflow", lambda v: annotated[v]))
    add("predict_region (rgbflow, model masks)", per_video(
        workdir, "predict_region", "predict_region/rgbflow_model", lambda v: annotated[v]))
    training = []
    seg, rm = cfg["segmenter"], cfg["region_model"]
    for name, tsv, steps, batch in (
            ("train_segmenter", res / "benchmarks/train_segmenter.tsv", seg["iterations"],
             seg["batch_size"]),
            ("region_stage1 (rgbflow)", res / "benchmarks/region_stage1/rgbflow.tsv",
             rm["stage1"]["iterations"], rm["stage1"]["batch_size"]),
            ("region_stage2 (rgbflow, gt+model)",
             res / "benchmarks/region_stage2/rgbflow_gt+model.tsv",
             rm["stage2"]["iterations"], rm["stage2"]["batch_size"])):
        if tsv.is_file():
            training.append((name, steps, batch, read_tsv_seconds(tsv)))

    print("\nper-video stages (job seconds include process start-up)")
    print(f"{'stage':40s} {'jobs':>5s} {'frames':>7s} {'job s':>8s} {'frames/s':>9s} "
          f"{'ms/frame':>9s} {'paper ms':>9s} {'ratio':>7s}")
    for rule, jobs, frames, seconds in rows:
        ms = 1000 * seconds / frames
        key = rule.split(" (")[0]
        paper = PAPER_MS.get(key) if "gt" not in rule else None
        paper_s = f"{paper:9d}" if paper else f"{'-':>9s}"
        ratio = f"{ms / paper:7.2f}" if paper else f"{'-':>7s}"
        print(f"{rule:40s} {jobs:5d} {frames:7d} {seconds:8.1f} {frames / seconds:9.2f} "
              f"{ms:9.0f} {paper_s} {ratio}")
    print("\ntraining stages")
    print(f"{'stage':40s} {'steps':>6s} {'batch':>6s} {'job s':>8s} {'steps/s':>8s} "
          f"{'train frames/s':>15s}")
    for name, steps, batch, seconds in training:
        print(f"{name:40s} {steps:6d} {batch:6d} {seconds:8.1f} {steps / seconds:8.2f} "
              f"{steps * batch / seconds:15.2f}")
    load = os.getloadavg()
    print(f"\nload average (1/5/15 min) at end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print("paper: Dang et al. 2018 section 4, Intel Xeon 2.4 GHz + Nvidia K80, A2D 320-high "
          "frames; here: CPU only, synthetic frames "
          f"{cfg['synthetic']['height']} high; ratio = ms here / paper ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
