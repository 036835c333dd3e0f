"""The papers' claims, checked on our own numbers: ``claims.md`` / ``claims.csv``.

    python -m pipeline.claims --eval-dir results/eval --segmenter results/segmenter/metrics.json \\
        --out results/tables/claims            # writes claims.md and claims.csv

Each claim compares two numbers of our run (evaluation JSONs of :mod:`pipeline.evaluate`, the
detection-free ones; the segmenter's ``metrics.json``) and says ``held`` or ``not held``; a claim
whose inputs were not produced says ``not run``. Nothing here is tuned or rounded in a claim's
favour: a tie counts as held only where the paper's claim is ">=" (and the comparison uses the
values as stored, not as printed).

Every model row is also read against the **all-background** prediction's value on the same split
(``all_background.json``, rule ``evaluate_background``): a model whose joint mIoU does not beat it
learned nothing, whatever the comparison with another model says. The table says so in a column.

The claims (A2D numbers are the papers'; ours are whatever the run measured):

- Dang et al. Table 1: the region model beats the baseline on joint ave and joint mIoU, for RGB
  and for RGB + flow; RGB + flow beats RGB on action ave, for the baseline and the region model.
- Dang et al. Table 3: GT region masks at test time >= the segmenter's masks (joint mIoU).
- Dang et al. Table 2: the region model's joint-mIoU gain over the baseline is larger on all
  pixels than on non-boundary pixels (region masks help most at object boundaries).
- Ji et al. Table 3: the full model >= w/o flow and >= w/o temporal aggregation (action mIoU);
  the full model >= the Mask R-CNN 43-class cross-product (joint mIoU).
- Our segmenter: test mask AP50 >= 0.6.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.cli import run_stage
from pipeline.errors import DataError

log = logging.getLogger("pipeline.claims")

#: A number of the run: (file key, setting, metric); file keys are evaluation JSON names
#: (``<model>`` -> ``<model>.json``, ``<model>.non_boundary`` -> the non-boundary JSON) or
#: ``segmenter`` (its metrics.json).
Ref = tuple[str, str | None, str]
BACKGROUND = "all_background"
SEGMENTER = "segmenter"


@dataclass(frozen=True)
class Claim:
    """``left OP right``; with ``gain``, each side is a difference ``(a, b)`` -> a - b."""

    paper: str
    text: str
    left: Ref | tuple[Ref, Ref]
    right: Ref | tuple[Ref, Ref] | float
    op: str  # ">" | ">="


def _j(model: str, metric: str, setting: str = "joint") -> Ref:
    return (model, setting, metric)


CLAIMS: tuple[Claim, ...] = (
    Claim("Dang T1", "region > baseline, RGB, joint ave",
          _j("region_rgb_model", "ave"), _j("baseline_rgb", "ave"), ">"),
    Claim("Dang T1", "region > baseline, RGB, joint mIoU",
          _j("region_rgb_model", "miou"), _j("baseline_rgb", "miou"), ">"),
    Claim("Dang T1", "region > baseline, RGB + flow, joint ave",
          _j("region_rgbflow_model", "ave"), _j("baseline_rgbflow", "ave"), ">"),
    Claim("Dang T1", "region > baseline, RGB + flow, joint mIoU",
          _j("region_rgbflow_model", "miou"), _j("baseline_rgbflow", "miou"), ">"),
    Claim("Dang T1", "RGB + flow > RGB, baseline, action ave",
          _j("baseline_rgbflow", "ave", "action"), _j("baseline_rgb", "ave", "action"), ">"),
    Claim("Dang T1", "RGB + flow > RGB, region model, action ave",
          _j("region_rgbflow_model", "ave", "action"), _j("region_rgb_model", "ave", "action"),
          ">"),
    Claim("Dang T3", "GT masks at test time >= segmenter masks, joint mIoU",
          _j("region_rgbflow_gt", "miou"), _j("region_rgbflow_model", "miou"), ">="),
    Claim("Dang T2", "region - baseline joint mIoU: gain on all pixels > on non-boundary pixels",
          (_j("region_rgbflow_model", "miou"), _j("baseline_rgbflow", "miou")),
          (_j("region_rgbflow_model.non_boundary", "miou"),
           _j("baseline_rgbflow.non_boundary", "miou")), ">"),
    Claim("Ji T3", "full >= w/o flow, action mIoU",
          _j("e2e_full", "miou", "action"), _j("e2e_no_flow", "miou", "action"), ">="),
    Claim("Ji T3", "full >= w/o temporal, action mIoU",
          _j("e2e_full", "miou", "action"), _j("e2e_no_temporal", "miou", "action"), ">="),
    Claim("Ji T3", "full >= Mask R-CNN 43-class pairs, joint mIoU",
          _j("e2e_full", "miou"), _j("e2e_maskrcnn_pairs", "miou"), ">="),
    Claim("ours", "segmenter test mask AP50 >= 0.6",
          (SEGMENTER, None, "ap50"), 0.6, ">="),
)
OPS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge}


def load_results(eval_dir: Path, segmenter: Path | None) -> dict[str, dict]:
    """Every ``*.json`` of ``eval_dir`` by name (``x.json`` -> ``x``, ``x.non_boundary.json`` ->
    ``x.non_boundary``) plus the segmenter's metrics as ``segmenter``. Unreadable files are
    errors naming the file; absent ones are simply absent (their claims say ``not run``)."""
    out: dict[str, dict] = {}
    paths = sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []
    if segmenter is not None and segmenter.is_file():
        paths.append(segmenter)
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(path, f"unreadable result JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(path, "not a JSON object")
        key = SEGMENTER if segmenter is not None and path == segmenter else path.name[:-5]
        out[key] = data
    return out


def value(results: dict[str, dict], ref: Ref) -> float | None:
    """The number ``ref`` points at, or None when its file was not produced."""
    key, setting, metric = ref
    if key not in results:
        return None
    block = results[key] if setting is None else results[key].get(setting)
    if not isinstance(block, dict) or metric not in block:
        raise DataError(f"{key}.json", f"no {setting}/{metric} in this result")
    got = block[metric]
    return None if got is None else float(got)


def side(results: dict[str, dict], spec) -> float | None:
    """One side of a claim: a number, a constant, or the difference of two numbers."""
    if isinstance(spec, (int, float)):
        return float(spec)
    if isinstance(spec[0], tuple):
        a, b = value(results, spec[0]), value(results, spec[1])
        return None if a is None or b is None else a - b
    return value(results, spec)


def _models(spec) -> list[str]:
    if isinstance(spec, (int, float)):
        return []
    if isinstance(spec[0], tuple):
        return [spec[0][0], spec[1][0]]
    return [spec[0]]


def learned(results: dict[str, dict], model: str) -> bool | None:
    """Joint mIoU above the all-background prediction's (None: either was not evaluated)."""
    base = model.split(".")[0]
    if base == SEGMENTER or BACKGROUND not in results or base not in results:
        return None
    ours, bg = value(results, _j(base, "miou")), value(results, _j(BACKGROUND, "miou"))
    return None if ours is None or bg is None else ours > bg


def check(results: dict[str, dict]) -> pd.DataFrame:
    """One row per claim: the two numbers, the verdict and whether the models beat background."""
    rows = []
    for claim in CLAIMS:
        left, right = side(results, claim.left), side(results, claim.right)
        if left is None or right is None:
            verdict = "not run"
        else:
            verdict = "held" if OPS[claim.op](left, right) else "not held"
        models = sorted({m.split(".")[0] for m in _models(claim.left) + _models(claim.right)})
        flags = {m: learned(results, m) for m in models if m != SEGMENTER}
        weak = [m for m, ok in flags.items() if ok is False]
        rows.append({"paper": claim.paper, "claim": claim.text, "op": claim.op,
                     "left": left, "right": right, "verdict": verdict,
                     "at_background": ", ".join(weak)})
    return pd.DataFrame(rows)


def _fmt(v: float | None) -> str:
    if v is None or math.isnan(v):  # a missing number (pandas stores None as NaN)
        return "–"
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.1f}"


def to_markdown(table: pd.DataFrame, results: dict[str, dict]) -> str:
    bg = value(results, _j(BACKGROUND, "miou")) if BACKGROUND in results else None
    meta = next((r.get("meta", {}) for k, r in results.items() if k != SEGMENTER), {})
    lines = [
        "# The papers' claims, measured on this run",
        "",
        f"Dataset: {meta.get('release', '?')} (synthetic: {meta.get('synthetic', '?')}), "
        f"split {meta.get('split', '?')}, {meta.get('n_frames', '?')} frames / "
        f"{meta.get('n_videos', '?')} videos.",
        f"All-background joint mIoU on this split: {_fmt(bg)} (a model at or below it learned "
        "nothing; listed under 'at background').",
        "Numbers are percent (AP50 as a fraction); 'left OP right' is the claim.",
        "",
        "| paper | claim | left | op | right | verdict | at background |",
        "|---|---|---:|:---:|---:|---|---|",
    ]
    for r in table.itertuples():
        lines.append(f"| {r.paper} | {r.claim} | {_fmt(r.left)} | {r.op} | {_fmt(r.right)} | "
                     f"{r.verdict} | {r.at_background or ''} |")
    counts = table.verdict.value_counts()
    lines += ["", f"Held {counts.get('held', 0)}, not held {counts.get('not held', 0)}, "
              f"not run {counts.get('not run', 0)} of {len(table)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dir", type=Path, required=True,
                        help="folder of evaluation JSONs (results/eval)")
    parser.add_argument("--segmenter", type=Path, default=None,
                        help="the segmenter's metrics.json (results/segmenter/metrics.json)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output path without suffix: writes OUT.md and OUT.csv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_stage(log, write_claims, args.eval_dir, args.segmenter, args.out)


def write_claims(eval_dir: Path, segmenter: Path | None, out: Path) -> pd.DataFrame:
    """Check the claims on the evaluations in ``eval_dir``; write ``out``.md and ``out``.csv.

    Raises:
        DataError: an evaluation file is missing or unreadable.
    """
    results = load_results(eval_dir, segmenter)
    table = check(results)
    write_text_atomic(out.with_suffix(".md"), to_markdown(table, results))
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    log.info("%s: %s", out.with_suffix(".md"),
             ", ".join(f"{k} {v}" for k, v in table.verdict.value_counts().items()))
    return table

if __name__ == "__main__":
    sys.exit(main())
