"""Zero-shot learning of actions (Ji et al. 2018, section 4.4, Fig. 4): table and figure.

Seven models are trained, each without the action labels of one actor x' (its actor labels,
boxes and masks kept; ``python -m pipeline.e2e.train --zero-shot-actor``). For each actor x':

- ``AP zero-shot``: joint (actor-action) detection AP of the model that never saw x''s actions,
  averaged over the valid actions of x' that have test GT
  (:func:`pipeline.e2e.detection_ap.actor_pair_ap`);
- ``AP full``: the same average for the fully supervised model;
- ``r_zs = AP zero-shot / AP full`` (eq. 3).

    python -m pipeline.e2e.zero_shot --full results/eval/e2e_full.detection.json \\
        --zero-shot adult=results/e2e/zeroshot/adult/detection.json ... \\
        --out results/tables/ji_zero_shot          # writes .md, .csv and .png

Inputs are detection JSONs of :mod:`pipeline.e2e.detect_eval`; each zero-shot input must come
from the model trained without that actor's actions (checked on its provenance), and all inputs
from one dataset. The paper reports these numbers only as a bar chart, so no published values
are tabulated beside ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import pandas as pd

from pipeline.a2d.classes import ACTORS
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.e2e.detection_ap import actor_pair_ap, zero_shot_ratio
from pipeline.errors import DataError

log = logging.getLogger("pipeline.e2e.zero_shot")


def joint_ap(result: dict) -> dict[int, float]:
    """``{pair id: AP}`` (NaN without GT) from a detection JSON."""
    return {int(k): math.nan if v is None else float(v)
            for k, v in result["joint"]["ap_by_id"].items()}


def _load(path: Path, zero_shot_actor: int) -> dict:
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable detection JSON ({exc})") from None
    if "joint" not in result or "ap_by_id" not in result["joint"]:
        raise DataError(path, "not a detection JSON of pipeline.e2e.detect_eval")
    provenance = result.get("meta", {}).get("predictions_provenance", [])
    got = {int(p.get("zero_shot_actor", -1)) for p in provenance}
    if got != {zero_shot_actor}:
        want = "the full model" if zero_shot_actor == 0 else \
            f"the model without {ACTORS[zero_shot_actor - 1]}'s actions"
        raise DataError(path, f"expected detections of {want}; provenance says zero-shot "
                              f"actor(s) {sorted(got)}")
    return result


def zero_shot_table(full: dict, zero_shot: dict[int, dict]) -> pd.DataFrame:
    """One row per actor (those given): AP full, AP zero-shot (percent) and r_zs."""
    full_ap = joint_ap(full)
    rows = []
    for actor in sorted(zero_shot):
        ap_full = actor_pair_ap(full_ap, actor)
        ap_zs = actor_pair_ap(joint_ap(zero_shot[actor]), actor)
        rows.append({"actor": ACTORS[actor - 1], "ap_full": ap_full, "ap_zero_shot": ap_zs,
                     "r_zs": zero_shot_ratio(ap_zs, ap_full)})
    return pd.DataFrame(rows, columns=["actor", "ap_full", "ap_zero_shot", "r_zs"])


def _fmt(v: float, digits: int) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(table: pd.DataFrame, full: dict, paths: dict[str, Path]) -> str:
    meta = full.get("meta", {})
    kind = {True: "SYNTHETIC dataset (not A2D: not comparable with the paper)",
            False: "A2D release", None: "dataset of unknown kind"}[meta.get("synthetic")]
    lines = [
        "# Ji et al. 2018, section 4.4 / Fig. 4: zero-shot learning of actions", "",
        f"Our numbers: {kind} at {meta.get('release', '?')}, split {meta.get('split', '?')}, "
        f"{meta.get('n_frames', '?')} frames / {meta.get('n_videos', '?')} videos; joint "
        f"detection AP (IoU {meta.get('iou', 0.5)}) averaged over each actor's valid actions "
        "with GT, in percent; r_zs = AP zero-shot / AP full.",
        *(f"- {k}: {p}" for k, p in paths.items()),
        "The paper gives its AP and r_zs only as a bar chart (Fig. 4), so no published values "
        "are listed.", "",
        "| actor | AP full | AP zero-shot | r_zs |", "|---|---:|---:|---:|",
    ]
    for r in table.itertuples():
        lines.append(f"| {r.actor} | {_fmt(r.ap_full, 1)} | {_fmt(r.ap_zero_shot, 1)} | "
                     f"{_fmt(r.r_zs, 2)} |")
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(table))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    a.bar(x - 0.2, table.ap_full.fillna(0), 0.4, label="full supervision")
    a.bar(x + 0.2, table.ap_zero_shot.fillna(0), 0.4, label="zero-shot")
    a.set_ylabel("AP (%)")
    a.set_title("(a) AP per actor", fontsize=9)
    a.legend(fontsize=8)
    b.bar(x, table.r_zs.fillna(0), 0.6, color="tab:green")
    b.axhline(1.0, color="grey", lw=0.8, ls="--")
    b.set_ylabel("r_zs")
    b.set_title("(b) AP zero-shot / AP full", fontsize=9)
    for ax in (a, b):
        ax.set_xticks(x, table.actor, rotation=30, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.e2e.zero_shot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", type=Path, required=True,
                        help="detection JSON of the fully supervised model")
    parser.add_argument("--zero-shot", nargs="+", required=True, metavar="ACTOR=FILE.json",
                        help="detection JSON of the model trained without ACTOR's actions")
    parser.add_argument("--out", type=Path, required=True,
                        help="output path without suffix: writes OUT.md, OUT.csv, OUT.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = {"full": args.full}
    try:
        full = _load(args.full, 0)
        zs: dict[int, dict] = {}
        for item in args.zero_shot:
            name, sep, path = item.partition("=")
            if not sep or name not in ACTORS:
                parser.error(f"--zero-shot entry {item!r} is not ACTOR=FILE.json "
                             f"(ACTOR one of {ACTORS})")
            actor = ACTORS.index(name) + 1
            if actor in zs:
                parser.error(f"actor {name} given twice")
            zs[actor] = _load(Path(path), actor)
            paths[name] = Path(path)
        releases = {r.get("meta", {}).get("release") for r in [full, *zs.values()]}
        if len(releases) > 1:
            raise DataError(args.out, f"inputs come from different datasets {sorted(map(str, releases))}")
    except DataError as exc:
        log.error("%s", exc)
        return 1
    table = zero_shot_table(full, zs)
    write_text_atomic(args.out.with_name(args.out.name + ".md"), markdown(table, full, paths))
    with atomic_path(args.out.with_name(args.out.name + ".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    synthetic = full.get("meta", {}).get("synthetic")
    figure(table, args.out.with_name(args.out.name + ".png"),
           "Zero-shot actions (Ji et al. Fig. 4 layout)" + (" - SYNTHETIC data" if synthetic else ""))
    log.info("wrote %s.md/.csv/.png (%d actors)", args.out, len(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
