"""Our numbers in the layout of the papers' tables, beside the published ones.

    python -m pipeline.tables --name dang_table1 \\
        --inputs baseline_rgbflow=results/eval/baseline.json ours_rgbflow=results/eval/ours.json \\
        --out results/tables/dang_table1            # writes dang_table1.md and dang_table1.csv

Each ``--inputs`` entry is ``ROW_KEY=FILE.json``: an evaluation JSON of ``pipeline.evaluate``
(a detection JSON ``{"actor": .., "action": .., "joint": ..}`` for ``ji_table2``). A row whose
key is not given is shown as "-" (a variant not run). Every method row of the paper appears
twice: ``ours`` (our numbers) and ``paper (A2D)`` (the published number, reference only, from
:mod:`pipeline.paper_numbers`). The label line above the table says which dataset (release path,
synthetic or not) and which run (prediction provenance, evaluation config) produced our numbers.

Segmentation tables on all pixels also carry, in columns of their own headed by
:data:`pipeline.metrics.VIDEO_AVERAGED_LABEL`, the ``video_averaged`` block of the evaluation
JSON: the number later work (MED-VT) reports as "mIoU", which is not the A2D protocol's and is
never put in the protocol's columns. The papers reproduced here report no such number ("-").

Ji et al. Table 3's "w/o Mask + SM" row used SharpMask masks; our variant fills the boxes, so our
row is named "Ours w/o Mask, boxes filled" and the paper's number beside it keeps the paper's name,
marked as the paper's SharpMask row.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import paper_numbers as paper
from pipeline.a2d.classes import JOINT_IDS, pair_name
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.errors import DataError
from pipeline.metrics import VIDEO_AVERAGED_LABEL

log = logging.getLogger("pipeline.tables")
DASH = "–"
PAPER_SOURCE = "paper (A2D)"
OURS_SOURCE = "ours"


@dataclass(frozen=True)
class Row:
    """One method row: ``key`` names the input giving our numbers (None: prior work, paper only);
    ``paper_label`` names the paper's row where it is not the same method as ours."""

    label: str
    key: str | None
    paper: dict | None
    paper_label: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """A paper table: ``layout`` picks the columns; ``pixels`` the evaluation JSONs it accepts."""

    title: str
    layout: str  # "dang" | "ji" | "per_class" | "detection"
    rows: tuple[Row, ...]
    pixels: str | None  # "all" | "non-boundary" | None (detection)


def _rows(numbers: dict, keys: dict[str, str | None],
          ours: dict[str, tuple[str, str]] | None = None) -> tuple[Row, ...]:
    """Rows in the paper's order; ``ours`` renames a paper row whose method differs from ours:
    ``{paper label: (our label, label of the paper's number)}``."""
    ours = ours or {}
    return tuple(Row(ours[label][0], keys[label], numbers[label], ours[label][1])
                 if label in ours else Row(label, keys[label], numbers[label])
                 for label in numbers)


#: Our no-mask variant fills boxes (``pipeline.e2e.postprocess``); the paper ran SharpMask.
JI_BOXES_FILLED = "Ours w/o Mask, boxes filled"


TABLES: dict[str, TableSpec] = {
    "dang_table1": TableSpec(
        "Dang et al. 2018, Table 1: DeepLab-type baseline vs region masks", "dang",
        _rows(paper.DANG_TABLE1, {"Baseline (RGB only)": "baseline_rgb",
                                  "Ours (RGB only)": "ours_rgb",
                                  "Baseline (RGB + flow)": "baseline_rgbflow",
                                  "Ours (RGB + flow)": "ours_rgbflow"}), "all"),
    "dang_table2": TableSpec(
        "Dang et al. 2018, Table 2: non-boundary pixels only", "dang",
        _rows(paper.DANG_TABLE2, {"Baseline (Non-Boundary)": "baseline_nb",
                                  "Ours (Non-Boundary)": "ours_nb"}), "non-boundary"),
    "dang_table3": TableSpec(
        "Dang et al. 2018, Table 3: region masks at training / testing time", "dang",
        _rows(paper.DANG_TABLE3, {"COCO + GT / COCO": "coco", "A2D + GT / A2D": "a2d",
                                  "A2D + GT / GT": "gt"}), "all"),
    "dang_table5": TableSpec(
        "Dang et al. 2018, Table 5: per-category accuracy (joint)", "per_class",
        _rows(paper.DANG_TABLE5, {"Baseline (RGB only)": "baseline_rgb",
                                  "Baseline (RGB + flow)": "baseline_rgbflow",
                                  "Ours (RGB only)": "ours_rgb",
                                  "Ours (RGB + flow)": "ours_rgbflow"}), "all"),
    "ji_table1": TableSpec(
        "Ji et al. 2018, Table 1: joint actor-action semantic segmentation", "ji",
        _rows(paper.JI_TABLE1, {**{k: None for k in paper.JI_TABLE1}, "Ours": "ours"}), "all"),
    "ji_table2": TableSpec(
        "Ji et al. 2018, Table 2: joint spatial detection of actors and actions (mAP, IoU 0.5)",
        "detection",
        _rows(paper.JI_TABLE2, {**{k: None for k in paper.JI_TABLE2}, "Ours (Current)": "ours"}),
        None),
    "ji_table3": TableSpec(
        "Ji et al. 2018, Table 3: ablations", "ji",
        _rows(paper.JI_TABLE3, {"Ours (Full)": "full", "Mask R-CNN Baseline": "maskrcnn",
                                "Ours w/o Mask + SM": "no_mask_sm",
                                "Ours w/o Temp Context": "no_temporal",
                                "Ours w/o Flow Stream": "no_flow",
                                "Ours w/o Joint Training": "no_joint"},
              {"Ours w/o Mask + SM": (JI_BOXES_FILLED,
                                      "Ours w/o Mask + SM (the paper's SharpMask row)")}), "all"),
}


def video_averaged_columns() -> list[tuple[str, tuple]]:
    """The ``video_averaged`` block's columns, one per setting, named as what they are."""
    return [(f"{VIDEO_AVERAGED_LABEL} ({s})", ("video_averaged", s))
            for s in ("joint", "actor", "action")]


def table_columns(spec: TableSpec) -> list[tuple[str, tuple]]:
    """:func:`columns` of the layout, plus the video-averaged ones for segmentation on all
    pixels."""
    extra = spec.layout in ("dang", "ji") and spec.pixels == "all"
    return columns(spec.layout) + (video_averaged_columns() if extra else [])


def columns(layout: str) -> list[tuple[str, tuple]]:
    """``[(header, path into a result)]`` in the paper's column order."""
    if layout == "dang":  # grouped by metric
        return [(f"{m} {s}", (s, k)) for m, k in (("glo", "glo"), ("ave", "ave"), ("mIoU", "miou"))
                for s in ("actor", "action", "joint")]
    if layout == "ji":  # grouped by setting
        return [(f"{s} {m}", (s, k)) for s in ("actor", "action", "joint")
                for m, k in (("ave", "ave"), ("glo", "glo"), ("mIoU", "miou"))]
    if layout == "per_class":
        order = [*paper.DANG_TABLE5_COLUMNS, 79]  # dog-none last: the paper has no column for it
        return ([("BG" if c == 0 else pair_name(c), ("per_class", c)) for c in order]
                + [("Avg", ("avg",))])
    if layout == "detection":
        return [(f"{s} mAP", (s,)) for s in ("actor", "action", "joint")]
    raise ValueError(f"unknown layout {layout!r}")


def _ours_values(layout: str, result: dict) -> dict:
    """Normalise an input JSON into the shape of the paper rows of this layout."""
    if layout == "per_class":
        acc = result["per_class_accuracy"]["joint"]
        return {"per_class": {c: acc.get(str(c)) for c in JOINT_IDS}, "avg": result["joint"]["ave"]}
    if layout == "detection":
        out = {}
        for s in ("actor", "action", "joint"):
            v = result[s]
            out[s] = v["map"] if isinstance(v, dict) else v
        return out
    return result


def _lookup(values: dict | None, path: tuple):
    node = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fmt(value) -> str:
    return DASH if value is None else f"{float(value):.1f}"


def load_inputs(spec: TableSpec, inputs: dict[str, Path]) -> dict[str, dict]:
    """Read each input JSON; check its key belongs to the table and its pixel setting matches."""
    keys = {r.key for r in spec.rows if r.key}
    out = {}
    for key, path in inputs.items():
        if key not in keys:
            raise DataError(path, f"row key {key!r} is not a row of this table; "
                                  f"valid keys: {sorted(keys)}")
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(path, f"unreadable result JSON ({exc})") from None
        pixels = result.get("meta", {}).get("pixels")
        if spec.pixels is not None and pixels != spec.pixels:
            raise DataError(path, f"evaluated on {pixels!r} pixels; this table needs "
                                  f"{spec.pixels!r} (see pipeline.evaluate --non-boundary-out)")
        out[key] = result
    return out


def label_lines(inputs: dict[str, dict], paths: dict[str, Path]) -> list[str]:
    """Which dataset and run produced our numbers; paper numbers labelled as a reference."""
    metas = {k: r.get("meta", {}) for k, r in inputs.items()}
    releases = {m.get("release") for m in metas.values()}
    if len(releases) > 1:
        raise ValueError("inputs were evaluated on different datasets "
                         f"{sorted(map(str, releases))}; one table compares runs on one dataset")
    lines = []
    if not inputs:
        lines.append(f"Our numbers: none given (every '{OURS_SOURCE}' row is {DASH}).")
    else:
        meta = next(iter(metas.values()))
        synthetic = meta.get("synthetic")
        kind = {True: "SYNTHETIC dataset (not A2D: not comparable with the paper rows)",
                False: "A2D release", None: "dataset of unknown kind"}[synthetic]
        lines.append(f"Our numbers ('{OURS_SOURCE}'): {kind} at {meta.get('release', '?')}, "
                     f"split {meta.get('split', '?')}, {meta.get('n_frames', '?')} frames / "
                     f"{meta.get('n_videos', '?')} videos.")
        for key, m in metas.items():
            prov = m.get("predictions_provenance") or []
            run = "; ".join(
                f"made by {p.get('source') or '?'} with config sha256 "
                f"{p.get('config_sha256', '?')}, code {p.get('code_version', '?')} "
                f"({p.get('code_hash', '?')})" for p in prov) or "provenance unknown (PNGs)"
            lines.append(f"- {key}: {paths[key]}: predictions {m.get('predictions', '?')} "
                         f"[{run}]; evaluation config {json.dumps(m.get('config'))}")
    lines.append(f"'{PAPER_SOURCE}': published numbers on the real A2D test split, reference only.")
    return lines


def build_table(name: str, inputs: dict[str, dict],
                paths: dict[str, Path]) -> tuple[str, pd.DataFrame]:
    """Markdown text and CSV frame of table ``name`` from loaded input JSONs."""
    spec = TABLES[name]
    cols = table_columns(spec)
    labels = label_lines(inputs, paths)
    dataset = labels[0]
    records = []
    for row in spec.rows:
        if row.key is not None:
            ours = _ours_values(spec.layout, inputs[row.key]) if row.key in inputs else None
            records.append((row.label, OURS_SOURCE, dataset,
                            [_lookup(ours, path) for _, path in cols]))
        if row.paper is not None:
            records.append((row.paper_label or row.label, PAPER_SOURCE, PAPER_SOURCE,
                            [_lookup(row.paper, path) for _, path in cols]))
    frame = pd.DataFrame([{"table": name, "method": m, "source": s, "dataset": d,
                           **{h: v for (h, _), v in zip(cols, vals)}}
                          for m, s, d, vals in records])
    md = [f"# {spec.title}", "", *labels, ""]
    # Wide tables (per-category) are split into blocks like the paper's.
    block = 15 if len(cols) > 12 else len(cols)
    for start in range(0, len(cols), block):
        part = cols[start:start + block]
        md.append("| method | source | " + " | ".join(h for h, _ in part) + " |")
        md.append("|---|---|" + "---:|" * len(part))
        for m, s, _, vals in records:
            md.append(f"| {m} | {s} | " + " | ".join(_fmt(v) for v in vals[start:start + block])
                      + " |")
        md.append("")
    return "\n".join(md), frame


def main(argv: list[str] | None = None) -> int:
    epilog = "tables and their row keys:\n" + "\n".join(
        f"  {name}: " + ", ".join(f"{r.key} ({r.label})" for r in spec.rows if r.key)
        for name, spec in TABLES.items())
    parser = argparse.ArgumentParser(prog="python -m pipeline.tables", description=__doc__,
                                     epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, choices=sorted(TABLES), help="which table")
    parser.add_argument("--inputs", nargs="*", default=[], metavar="KEY=FILE.json",
                        help="our result for row KEY (see below); rows not given show '-'")
    parser.add_argument("--out", type=Path, required=True,
                        help="output path without suffix: writes OUT.md and OUT.csv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths: dict[str, Path] = {}
    for item in args.inputs:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            parser.error(f"--inputs entry {item!r} is not KEY=FILE.json")
        if key in paths:
            parser.error(f"row key {key!r} given twice")
        paths[key] = Path(path)
    try:
        inputs = load_inputs(TABLES[args.name], paths)
        md, frame = build_table(args.name, inputs, paths)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    write_text_atomic(args.out.with_name(args.out.name + ".md"), md)
    with atomic_path(args.out.with_name(args.out.name + ".csv")) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.1f")
    log.info("wrote %s.md and .csv (%d of %d rows of ours given)", args.out, len(inputs),
             sum(1 for r in TABLES[args.name].rows if r.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
