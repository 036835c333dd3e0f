"""Build the run report: ``OUT/index.html`` (self-contained) and its figures under ``OUT/figures``.

    python -m pipeline.report --results results --release DIR --out results/report \\
        --eval baseline_rgbflow=results/eval/baseline_rgbflow.json \\
               region_rgbflow_model=results/eval/region_rgbflow_model.json \\
        [--confusion NAME=FILE.npz|FILE.json|PREDICTIONS_DIR ...] \\
        [--loss stage1_rgbflow=results/region_model/rgbflow/stage1_loss.csv ...] \\
        [--tables results/tables/dang_table1.md ...] [--timing results/tables/timing.csv] \\
        [--qualitative baseline_rgbflow=results/predictions/baseline_rgbflow ...] \\
        [--masks-dir results/masks/model] [--frames-dir results/frames] [--n-frames 4] \\
        [--config config.yaml | --config-json JSON] [--link-images]

Every input is named explicitly (the Snakemake rule declares the same files); nothing is found by
globbing. An input that was not given, or whose file does not exist, shows as a short "Not run"
note in its section; a file that exists but is malformed is an error (exit 1) naming it.

Sections: the dataset label (synthetic or A2D, read from the evaluation JSONs' ``meta``) and the
config that produced the numbers; headline metrics (every value read from the evaluation JSONs);
the paper tables (``results/tables/*.md`` of ``pipeline.tables``); per-class accuracy; confusion
heat maps; training curves; time per frame (``pipeline.report.timing``); qualitative frames.
Confusion counts are not in the evaluation JSON: give ``--confusion`` (see
:mod:`pipeline.report.confusion`; a predictions folder is scored again for them), or an
evaluation JSON carrying a ``confusion_counts`` key is used as is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import write_text_atomic
from pipeline.errors import DataError
from pipeline.metrics import SETTINGS, VIDEO_AVERAGED_DEFINITION, VIDEO_AVERAGED_LABEL
from pipeline.report import confusion, figures, html, qualitative

log = logging.getLogger("pipeline.report")
TITLE = "actorseg run report"


def _pairs(parser: argparse.ArgumentParser, items: list[str], flag: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            parser.error(f"{flag} entry {item!r} is not NAME=PATH")
        if key in out:
            parser.error(f"{flag} name {key!r} given twice")
        out[key] = Path(path)
    return out


def load_evals(paths: dict[str, Path]) -> tuple[dict[str, dict], list[str]]:
    """Read the evaluation JSONs that exist; return them and the names of missing ones."""
    results, missing = {}, []
    for name, path in paths.items():
        if not path.is_file():
            missing.append(f"{name} ({path})")
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(path, f"unreadable evaluation JSON ({exc})") from None
        if not all(isinstance(data.get(s), dict) for s in SETTINGS) or "meta" not in data:
            raise DataError(path, "not an evaluation JSON of pipeline.evaluate (needs actor, "
                                  "action, joint and meta)")
        results[name] = data
    return results, missing


def dataset_banner(results: dict[str, dict], release: Path) -> tuple[str, str]:
    """(css class, HTML) of the label saying which dataset produced the numbers."""
    if not results:
        return "unknown", (f"<b>Dataset: unknown</b> (no evaluation was run); release given: "
                           f"<code>{html.esc(release)}</code>")
    metas = {name: r["meta"] for name, r in results.items()}
    releases = sorted({str(m.get("release")) for m in metas.values()})
    kinds = {m.get("synthetic") for m in metas.values()}
    if len(releases) > 1 or len(kinds) > 1:
        return "unknown", ("<b>Mixed datasets</b>: the evaluations were run on different releases "
                           + ", ".join(f"<code>{html.esc(r)}</code>" for r in releases)
                           + "; numbers of different rows are not comparable.")
    meta = next(iter(metas.values()))
    kind = kinds.pop()
    label = {True: ("synthetic", "SYNTHETIC dataset (not A2D): these numbers test the pipeline "
                                 "and are not comparable with the papers' A2D numbers"),
             False: ("a2d", "A2D release"),
             None: ("unknown", "dataset of unknown kind (no README in the release)")}[kind]
    return label[0], (f"<b>Dataset: {html.esc(label[1])}</b><br>release "
                      f"<code>{html.esc(releases[0])}</code>, split {html.esc(meta.get('split'))},"
                      f" {html.esc(meta.get('n_frames'))} frames / {html.esc(meta.get('n_videos'))}"
                      " videos (from the evaluation JSONs)")


def _fmt(value) -> str:
    return html.DASH if value is None else f"{float(value):.1f}"


def headline_section(results: dict[str, dict], paths: dict[str, Path],
                     missing: list[str]) -> str:
    if not results:
        return html.not_run("no evaluation JSON" + (f" ({', '.join(missing)} missing)"
                                                     if missing else " given"))
    order = ("joint", "actor", "action")
    header = (["model", "pixels", "frames"] + [f"{s} {m}" for s in order
                                               for m in ("mIoU", "ave", "glo")]
              + [f"{VIDEO_AVERAGED_LABEL} ({s})" for s in order])
    rows = []
    for name, r in results.items():
        averaged = r.get("video_averaged") or {}
        rows.append([name, r["meta"].get("pixels", "?"), r["meta"].get("n_frames", "?")]
                    + [_fmt(r[s].get(k)) for s in order for k in ("miou", "ave", "glo")]
                    + [_fmt(averaged.get(s)) for s in order])
    parts = ["<p>Percent, A2D protocol (one confusion matrix over all frames, background "
             "included, means over classes with GT pixels), and in the last three columns, apart "
             f"from it, the {html.esc(VIDEO_AVERAGED_LABEL)}: "
             f"{html.esc(VIDEO_AVERAGED_DEFINITION)}. Read from:</p>",
             "<ul>" + "".join(f"<li>{html.esc(n)}: <code>{html.esc(paths[n])}</code></li>"
                              for n in results) + "</ul>",
             html.table(header, rows)]
    prov = []
    for name, r in results.items():
        for p in r["meta"].get("predictions_provenance") or []:
            prov.append([name, p.get("source", "?"), p.get("config_sha256", "?"),
                         p.get("code_version", "?"), p.get("code_hash", "?")])
    if prov:
        parts += ["<h3>Which run made the predictions</h3>",
                  html.table(["model", "source", "config sha256", "code version", "code hash"],
                             prov)]
    if missing:
        parts.append(html.not_run("evaluation(s) " + ", ".join(missing)))
    return "\n".join(parts)


def config_section(config_text: str | None, config_name: str) -> str:
    if config_text is None:
        return html.not_run("no config given (--config / --config-json)")
    sha = hashlib.sha256(config_text.encode()).hexdigest()
    return (f"<p>Config <code>{html.esc(config_name)}</code>, sha256 <code>{sha[:16]}</code> "
            "(each prediction cache records the sha256 of its own section, see the headline "
            "table).</p>" + html.details("show the config", config_text))


def tables_section(paths: list[Path]) -> str:
    if not paths:
        return html.not_run("no table given (python -m pipeline.tables)")
    parts = []
    for path in paths:
        if not path.is_file():
            parts.append(html.not_run(f"table {path.name} ({path} missing)"))
            continue
        parts.append(html.markdown_to_html(path.read_text(), heading_offset=2))
        parts.append(f"<p><small>source: <code>{html.esc(path)}</code></small></p>")
    return "\n".join(parts)


def build(args: argparse.Namespace, evals: dict[str, Path], conf: dict[str, Path],
          losses: dict[str, Path], quali: dict[str, Path]) -> Path:
    out = args.out
    fig_dir = out / "figures"
    page_dir = out
    embed = not args.link_images
    results, missing = load_evals(evals)
    sections: list[tuple[str, str]] = []

    config_text, config_name = None, ""
    if args.config_json:
        config_text = json.dumps(json.loads(args.config_json), indent=2, sort_keys=True)
        config_name = "(passed by the rule as JSON)"
    elif args.config:
        config_text, config_name = args.config.read_text(), str(args.config)
    sections.append(("Headline metrics", headline_section(results, evals, missing)))
    sections.append(("Config", config_section(config_text, config_name)))
    sections.append(("Paper tables", tables_section(args.tables)))

    # Per-class accuracy (all-pixel evaluations only; non-boundary ones score other pixels).
    bars = {n: r for n, r in results.items() if r["meta"].get("pixels", "all") == "all"}
    if bars:
        parts = [html.image(figures.per_class_bars(bars, s, fig_dir / f"per_class_{s}.png"),
                            page_dir, f"per-class accuracy, {s} setting", embed)
                 for s in ("joint", "actor", "action")]
        sections.append(("Per-class accuracy", "\n".join(parts)))
    else:
        sections.append(("Per-class accuracy", html.not_run("no all-pixel evaluation JSON")))

    counts = {n: r[confusion.JSON_KEY] for n, r in results.items() if confusion.JSON_KEY in r}
    parts, notes = [], []
    for name, path in conf.items():
        if not path.exists():
            notes.append(html.not_run(f"confusion of {name} ({path} missing)"))
            continue
        counts[name] = confusion.counts_from(path, args.release, args.index)
    for name, c in counts.items():
        c = np.asarray(c, dtype=np.int64)
        for s in ("joint", "actor", "action"):
            png = figures.confusion_heatmap(c, s, fig_dir / f"confusion_{name}_{s}.png",
                                            f"{name}: {s} confusion (% of GT pixels per row)")
            parts.append(html.image(png, page_dir, f"{name}, {s} setting", embed))
    if not counts and not notes:
        notes.append(html.not_run("no confusion counts given (--confusion)"))
    sections.append(("Confusion matrices", "\n".join(parts + notes)))

    present = {n: p for n, p in losses.items() if p.is_file()}
    parts = [html.not_run(f"training curve {n} ({p} missing)")
             for n, p in losses.items() if n not in present]
    if present:
        parts.insert(0, html.image(figures.loss_curves(present, fig_dir / "loss_curves.png"),
                                   page_dir, "training losses: " + ", ".join(present), embed))
    elif not losses:
        parts.append(html.not_run("no loss CSV given (--loss)"))
    sections.append(("Training curves", "\n".join(parts)))

    if args.timing is not None and args.timing.is_file():
        table = pd.read_csv(args.timing)
        md = args.timing.with_suffix(".md")
        parts = [html.markdown_to_html(md.read_text()) if md.is_file() else ""]
        parts.append(html.image(figures.timing_bars(table, fig_dir / "timing.png"), page_dir,
                                "ours vs Dang et al. 2018, ms per frame", embed))
        sections.append(("Time per frame", "\n".join(parts)))
    else:
        sections.append(("Time per frame", html.not_run(
            "timing table " + (f"({args.timing} missing)" if args.timing else "not given")
            + " (python -m pipeline.report.timing)")))

    picks = qualitative.select_frames(args.index, args.n_frames) if args.index.is_file() else []
    if picks and (quali or args.masks_dir):
        png = qualitative.qualitative_figure(
            args.release, picks, fig_dir / "qualitative.png", frames_dir=args.frames_dir,
            predictions=quali, masks_dir=args.masks_dir)
        sections.append(("Qualitative results", html.image(
            png, page_dir, "test frames: frame, GT, predictions, region masks", embed)))
    else:
        sections.append(("Qualitative results", html.not_run(
            "no predictions / masks given (--qualitative, --masks-dir) or no test frames in "
            f"{args.index}")))

    intro = ("<p>Every number on this page is read from a file the pipeline wrote; the paper "
             "rows of the tables are the published A2D numbers, shown for reference only.</p>")
    index_html = out / "index.html"
    write_text_atomic(index_html, html.page(TITLE, dataset_banner(results, args.release), intro,
                                            sections))
    return index_html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results root: default place of --index and --frames-dir")
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder (GT)")
    parser.add_argument("--out", type=Path, required=True,
                        help="report folder: OUT/index.html and OUT/figures/*.png")
    parser.add_argument("--index", type=Path, help="frame index (default RESULTS/index/frames.csv)")
    parser.add_argument("--eval", nargs="*", default=[], metavar="NAME=FILE.json",
                        help="evaluation JSONs of pipeline.evaluate")
    parser.add_argument("--confusion", nargs="*", default=[], metavar="NAME=PATH",
                        help="confusion counts: .npz / .json, or a predictions folder to score")
    parser.add_argument("--loss", nargs="*", default=[], metavar="NAME=FILE.csv",
                        help="training-loss CSVs (step + loss* columns)")
    parser.add_argument("--tables", nargs="*", type=Path, default=[], metavar="FILE.md",
                        help="paper tables written by pipeline.tables")
    parser.add_argument("--timing", type=Path, metavar="FILE.csv",
                        help="timing table of pipeline.report.timing (its .md beside it)")
    parser.add_argument("--qualitative", nargs="*", default=[], metavar="NAME=PRED_DIR",
                        help="prediction folders drawn in the qualitative panel")
    parser.add_argument("--frames-dir", type=Path, help="frames caches (default RESULTS/frames)")
    parser.add_argument("--masks-dir", type=Path, help="masks caches drawn over the frames")
    parser.add_argument("--n-frames", type=int, default=4, help="qualitative test frames")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="the run's config.yaml, shown on the page")
    group.add_argument("--config-json", help="the run's whole config as JSON (from the rule)")
    parser.add_argument("--link-images", action="store_true",
                        help="link the PNGs relative to the page instead of embedding them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.index = args.index or args.results / "index" / "frames.csv"
    args.frames_dir = args.frames_dir or args.results / "frames"
    evals = _pairs(parser, args.eval, "--eval")
    conf = _pairs(parser, args.confusion, "--confusion")
    losses = _pairs(parser, args.loss, "--loss")
    quali = _pairs(parser, args.qualitative, "--qualitative")
    try:
        page = build(args, evals, conf, losses, quali)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %s", page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
