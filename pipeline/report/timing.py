"""Per-stage time per frame from the Snakemake benchmark files, beside Dang et al.'s numbers.

    python -m pipeline.report.timing --index results/index/frames.csv \\
        --benchmarks results/benchmarks --stage flow --stage masks/model \\
        --stage region_features/rgbflow --stage predict_region/rgbflow_model \\
        [--stage predict_baseline/rgbflow] --out results/tables/timing   # timing.md + timing.csv

Each ``--stage RULE[/VARIANT]`` names a benchmark folder ``BENCHMARKS/RULE[/VARIANT]/`` holding
one file per job (``benchmark:`` of the per-video rules, ``docs/architecture.md``): ``<video>.tsv``
for a one-video job, ``s<16 hex>.tsv`` for a shard job of ``--videos-per-job`` videos
(``cluster.videos_per_job``, :mod:`pipeline.shards`). The files read are exactly those of the
videos the rule runs on, taken from the frame index (every video, or the test videos for the
``predict_*`` rules) and cut into the same shards as the workflow, never a directory listing: a
shard's file where it exists, else its videos' one-video files; a missing file is counted and
reported, not guessed.

Time per frame = the jobs' wall seconds (column ``s``; the mean over rows when a benchmark was
repeated) summed, divided by the frames those jobs processed: the annotated frames of the jobs'
videos in the index (the flow stage also computes the flow of their context frames). It includes
each job's fixed cost (interpreter start, imports, model load), which dominates on small clips
and is paid once per shard with ``cluster.videos_per_job`` > 1.

Reference (Dang et al. 2018, section 4 "Computational complexity", one K80 GPU + one CPU core):
flow (FlowNet) 350 ms, region masks (FCIS) 300 ms, region-based network inference 450 ms per
frame, about 1100 ms in all; the DeepLab-type baseline about 395 ms including flow.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.errors import DataError
from pipeline.index import read_index
from pipeline.shards import make_shards

log = logging.getLogger("pipeline.report.timing")
DASH = "–"


@dataclass(frozen=True)
class StageSpec:
    """A per-video rule whose benchmark is timed: which videos it runs on, what it stands for."""

    what: str
    split: str | None  # None: every indexed video; "test": the test videos only
    paper_ms: float | None  # Dang et al.'s per-frame time of the same step, if they give one
    paper_what: str


#: Known per-video rules (benchmark folder = rule name). Paper times: Dang et al. 2018, sec. 4.
STAGES: dict[str, StageSpec] = {
    "frames": StageSpec("frame decoding", None, None, ""),
    "flow": StageSpec("optical flow", None, 350.0, "FlowNet"),
    "masks": StageSpec("region masks", None, 300.0, "FCIS"),
    "region_features": StageSpec("region model front-end (feature cache)", None, None,
                                 "part of the 450 ms network inference"),
    "predict_region": StageSpec("region model back-end (predict)", "test", None,
                                "part of the 450 ms network inference"),
    "predict_baseline": StageSpec("baseline (front-end + ASPP, predict)", "test", None, ""),
}

#: Sums of measured rows compared with a paper total: (label, rule prefixes, paper ms, what).
TOTALS: tuple[tuple[str, tuple[str, ...], float, str], ...] = (
    ("segmentation network (front-end + back-end)", ("region_features", "predict_region"),
     450.0, "region-based network inference"),
    ("region method total (flow + masks + network)",
     ("flow", "masks", "region_features", "predict_region"), 1100.0, "whole approach"),
    ("baseline total (flow + baseline)", ("flow", "predict_baseline"), 395.0,
     "DeepLab-type baseline incl. flow"),
)
COLUMNS = ("stage", "what", "jobs", "jobs_missing", "frames", "seconds", "ms_per_frame",
           "cpu_ms_per_frame", "max_rss_mb", "paper_ms_per_frame", "paper_what")


def read_benchmark(path: str | Path) -> dict[str, float]:
    """One Snakemake benchmark TSV -> ``{"s", "cpu_time", "max_rss"}`` (means over repeats).

    Snakemake writes ``s h:m:s max_rss max_vms max_uss max_pss io_in io_out mean_load
    cpu_time`` (MB, seconds), one row per repeat, ``NA`` where a value could not be measured.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(path, f"unreadable benchmark file ({exc})") from None
    if "s" not in table.columns or table.empty:
        raise DataError(path, f"not a Snakemake benchmark file (columns {list(table.columns)})")
    out = {}
    for col in ("s", "cpu_time", "max_rss"):
        values = pd.to_numeric(table[col], errors="coerce") if col in table else pd.Series([])
        out[col] = float(values.mean()) if values.notna().any() else float("nan")
    if not np.isfinite(out["s"]):
        raise DataError(path, "no wall time (column s) recorded")
    return out


def frames_per_video(index: str | Path, split: str | None) -> dict[str, int]:
    """``{video: annotated frames}`` from the frame index, restricted to ``split`` if given."""
    table = read_index(index)
    if split is not None:
        table = table[table.split == split]
    return {str(v): int(n) for v, n in table.groupby("video", sort=True).size().items()}


def rule_of(stage: str) -> str:
    """``masks/model`` -> ``masks``: the rule name is the first folder of the benchmark path."""
    return stage.split("/", 1)[0]


def job_files(folder: Path, frames: dict[str, int], videos_per_job: int) -> tuple[
        list[tuple[Path, int]], int]:
    """``([(benchmark file, frames of its videos)], videos without a file)`` of one stage.

    The videos are cut into the workflow's shards (``make_shards``); a shard's own file
    ``s<hex>.tsv`` counts for all its videos, else each video's ``<video>.tsv`` (a one-video
    job: ``videos_per_job`` 1, or a video outside the shards planned when the run started).
    """
    found, missing = [], 0
    for name, vids in make_shards(frames, videos_per_job).items():
        shard = folder / f"{name}.tsv"
        if videos_per_job > 1 and shard.is_file():
            found.append((shard, sum(frames[v] for v in vids)))
            continue
        for v in vids:
            path = folder / f"{v}.tsv"
            if path.is_file():
                found.append((path, frames[v]))
            else:
                missing += 1
    return found, missing


def stage_timing(benchmarks: Path, index: Path, stage: str, videos_per_job: int = 1) -> dict:
    """The timing row of one ``RULE[/VARIANT]`` (``ms_per_frame`` None when no job ran).

    ``jobs``: benchmark files read; ``jobs_missing``: videos without one."""
    rule = rule_of(stage)
    if rule not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; timed rules: {sorted(STAGES)}")
    spec = STAGES[rule]
    found, missing = job_files(benchmarks / stage, frames_per_video(index, spec.split),
                               videos_per_job)
    seconds = cpu = 0.0
    frames = 0
    rss = []
    for path, n in found:
        bench = read_benchmark(path)
        seconds += bench["s"]
        cpu += bench["cpu_time"] if np.isfinite(bench["cpu_time"]) else 0.0
        if np.isfinite(bench["max_rss"]):
            rss.append(bench["max_rss"])
        frames += n
    jobs = len(found)
    ran = frames > 0
    return {
        "stage": stage, "what": spec.what, "jobs": jobs, "jobs_missing": missing,
        "frames": frames, "seconds": seconds if ran else None,
        "ms_per_frame": 1000.0 * seconds / frames if ran else None,
        "cpu_ms_per_frame": 1000.0 * cpu / frames if ran else None,
        "max_rss_mb": max(rss) if rss else None,
        "paper_ms_per_frame": spec.paper_ms, "paper_what": spec.paper_what,
    }


def total_rows(rows: list[dict]) -> list[dict]:
    """Sums of per-frame times compared with the paper's totals, where every part was timed
    (one variant per rule: the first given)."""
    by_rule: dict[str, dict] = {}
    for row in rows:
        by_rule.setdefault(rule_of(row["stage"]), row)
    out = []
    for label, parts, paper_ms, what in TOTALS:
        got = [by_rule.get(p) for p in parts]
        if any(r is None or r["ms_per_frame"] is None for r in got):
            continue
        out.append({
            "stage": "+".join(r["stage"] for r in got), "what": label, "jobs": None,
            "jobs_missing": None, "frames": None, "seconds": None,
            "ms_per_frame": sum(r["ms_per_frame"] for r in got),
            "cpu_ms_per_frame": sum(r["cpu_ms_per_frame"] for r in got),
            "max_rss_mb": None, "paper_ms_per_frame": paper_ms, "paper_what": what,
        })
    return out


def timing_table(benchmarks: Path, index: Path, stages: list[str],
                 videos_per_job: int = 1) -> pd.DataFrame:
    """One row per stage, then the totals; columns :data:`COLUMNS`."""
    rows = [stage_timing(benchmarks, index, s, videos_per_job) for s in stages]
    return pd.DataFrame(rows + total_rows(rows), columns=list(COLUMNS))


def _cell(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return DASH
    return f"{float(value):.{digits}f}" if digits or isinstance(value, float) else str(value)


def timing_markdown(table: pd.DataFrame, index: Path, benchmarks: Path) -> str:
    lines = [
        "# Time per frame by stage",
        "",
        f"Ours: Snakemake benchmarks under {benchmarks}, wall seconds (column s) summed over the "
        f"jobs, divided by the annotated frames of the jobs' videos in {index}. Each job's fixed "
        "cost (start-up, imports, model load) is included. A stage with no benchmark file shows "
        f"{DASH} (not run).",
        "Paper: Dang et al. 2018, section 4 (K80 GPU, one CPU core, A2D), reference only: "
        "different hardware and data.",
        "",
        "| stage | what | jobs (videos missing) | frames | ours ms/frame | ours CPU ms/frame "
        "| max RSS MB | paper ms/frame | paper step |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in table.replace({np.nan: None}).to_dict("records"):
        jobs = DASH if row["jobs"] is None else f"{int(row['jobs'])} ({int(row['jobs_missing'])})"
        frames = DASH if row["frames"] is None else str(int(row["frames"]))
        lines.append(f"| {row['stage']} | {row['what']} | {jobs} | {frames} | "
                     f"{_cell(row['ms_per_frame'], 1)} | {_cell(row['cpu_ms_per_frame'], 1)} | "
                     f"{_cell(row['max_rss_mb'], 0)} | {_cell(row['paper_ms_per_frame'], 0)} | "
                     f"{row['paper_what'] or DASH} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report.timing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV")
    parser.add_argument("--benchmarks", type=Path, required=True,
                        help="the benchmark root (results/benchmarks)")
    parser.add_argument("--stage", action="append", required=True, metavar="RULE[/VARIANT]",
                        help=f"benchmark folder to time, repeatable; rules: {sorted(STAGES)}")
    parser.add_argument("--videos-per-job", type=int, default=1, metavar="N",
                        help="cluster.videos_per_job of the run: shard benchmark files s<hex>.tsv")
    parser.add_argument("--out", type=Path, required=True,
                        help="output path without suffix: writes OUT.md and OUT.csv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        table = timing_table(args.benchmarks, args.index, args.stage, args.videos_per_job)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    write_text_atomic(args.out.with_name(args.out.name + ".md"),
                      timing_markdown(table, args.index, args.benchmarks))
    with atomic_path(args.out.with_name(args.out.name + ".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.3f")
    for row in table.itertuples():
        if pd.notna(row.jobs_missing) and row.jobs_missing:  # totals rows have none
            log.warning("%s: %d video(s) without a benchmark file", row.stage,
                        int(row.jobs_missing))
    log.info("wrote %s.md and .csv (%d stages)", args.out, len(args.stage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
