"""The report's figures, plain matplotlib (Agg), each written atomically as a PNG.

- :func:`per_class_bars`: per-class accuracy of one setting from evaluation JSONs
  (``per_class_accuracy``), one bar per model and class (Dang et al. Table 5 as a chart);
- :func:`confusion_heatmap`: a setting's confusion matrix, each GT row normalised to 100 %;
- :func:`loss_curves`: training-loss CSVs (``step`` plus ``loss*`` columns), one panel each;
- :func:`timing_bars`: ours vs the paper's milliseconds per frame, per stage.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from pipeline.metrics import SETTING_BY_NAME, setting_matrix  # noqa: E402

DPI = 110


def save(fig: plt.Figure, out: str | Path) -> Path:
    """Write ``fig`` as a PNG through :func:`pipeline.atomic.atomic_path` and close it."""
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return out


def per_class_bars(results: dict[str, dict], setting: str, out: str | Path) -> Path:
    """Grouped bars of per-class accuracy (%) for ``setting`` (``actor``/``action``/``joint``).

    Args:
        results: ``{model name: evaluation JSON}``; classes without GT pixels (accuracy None)
            get no bar and an "n/a" mark.
    """
    spec = SETTING_BY_NAME[setting]
    names = list(results)
    k = spec.num_classes
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * k * max(1, len(names)) ** 0.5 + 2), 4.2))
    x = np.arange(k)
    for i, name in enumerate(names):
        acc = results[name].get("per_class_accuracy", {}).get(setting, {})
        vals = np.array([np.nan if acc.get(str(c)) is None else float(acc[str(c)])
                         for c in spec.class_ids])
        ax.bar(x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(vals), width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(spec.names, rotation=90 if k > 12 else 30, ha="center" if k > 12 else "right",
                       fontsize=7 if k > 12 else 8)
    no_gt = [all(r.get("per_class_accuracy", {}).get(setting, {}).get(str(c)) is None
                 for r in results.values()) for c in spec.class_ids]
    for label, missing in zip(ax.get_xticklabels(), no_gt):
        if missing:  # no bar because the class has no GT pixels, not because accuracy is 0
            label.set_color("#aaaaaa")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Per-class accuracy, {setting} setting (grey names: no GT pixels, no bar)",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(names)), loc="upper right")
    fig.tight_layout()
    return save(fig, out)


def setting_percent(counts: np.ndarray, setting: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Row-normalised (% of each GT class's pixels) matrix of ``setting`` with its labels.

    Returns:
        (K, C) float64 (NaN rows: classes without GT pixels), row names, column names; the
        joint setting keeps its extra "invalid pair" column, actor/action drop the empty one.
    """
    spec = SETTING_BY_NAME[setting]
    m = setting_matrix(counts, spec).astype(np.float64)  # (K, K + 1)
    cols = list(spec.names)
    if setting == "joint":
        cols.append("(invalid pair)")
    else:
        m = m[:, :-1]
    gt = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(gt > 0, 100.0 * m / gt, np.nan)
    return pct, list(spec.names), cols


def confusion_heatmap(counts: np.ndarray, setting: str, out: str | Path, title: str = "") -> Path:
    """Heat map of the ``setting`` confusion matrix from raw (80, 80) counts."""
    pct, rows, cols = setting_percent(counts, setting)
    k = len(rows)
    size = 3.5 + 0.17 * k
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(pct), cmap=cmap, vmin=0, vmax=100, aspect="equal")
    fs = 5 if k > 12 else 8
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=90, fontsize=fs)
    ax.set_yticks(range(k))
    ax.set_yticklabels(rows, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth (grey: no GT pixels)")
    if k <= 12:  # small matrices: print the percentages
        for i in range(k):
            for j in range(len(cols)):
                if np.isfinite(pct[i, j]) and pct[i, j] >= 0.5:
                    ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if pct[i, j] < 60 else "black")
    ax.set_title(title or f"Confusion, {setting} (% of GT pixels per row)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the GT class's pixels")
    fig.tight_layout()
    return save(fig, out)


def read_loss_csv(path: str | Path) -> pd.DataFrame:
    """A loss CSV with a ``step`` column and at least one ``loss*`` column."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(path, f"unreadable loss CSV ({exc})") from None
    if "step" not in table.columns or not any(c.startswith("loss") for c in table.columns):
        raise DataError(path, f"a loss CSV needs 'step' and 'loss*' columns, has "
                              f"{list(table.columns)}")
    return table


def loss_curves(curves: dict[str, str | Path], out: str | Path) -> Path:
    """One panel per loss CSV: every ``loss*`` column against ``step`` (log scale when the
    losses are all positive)."""
    names = list(curves)
    ncols = min(2, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        table = read_loss_csv(curves[name])
        cols = [c for c in table.columns if c.startswith("loss")]
        for c in cols:
            ax.plot(table["step"], table[c], lw=1.5 if c == "loss" else 0.9, label=c)
        values = table[cols].to_numpy(dtype=float)
        if np.isfinite(values).any() and np.nanmin(values) > 0:
            ax.set_yscale("log")
        ax.set_title(f"{name} ({len(table)} logged steps)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if len(cols) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out)


def timing_bars(table: pd.DataFrame, out: str | Path) -> Path:
    """Ours vs paper ms per frame for every row of a :mod:`pipeline.report.timing` table."""
    rows = table.reset_index(drop=True)
    y = np.arange(len(rows))
    ours = pd.to_numeric(rows["ms_per_frame"], errors="coerce").to_numpy(dtype=float)
    paper = pd.to_numeric(rows["paper_ms_per_frame"], errors="coerce").to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(rows) + 1.4))
    ax.barh(y - 0.2, np.nan_to_num(ours), 0.4, label="ours", color="tab:blue")
    ax.barh(y + 0.2, np.nan_to_num(paper), 0.4, label="paper (Dang 2018, K80, A2D)",
            color="tab:gray")
    for i, (o, p) in enumerate(zip(ours, paper)):
        ax.text(np.nan_to_num(o), i - 0.2, " not run" if np.isnan(o) else f" {o:.0f}",
                va="center", fontsize=7)
        if np.isfinite(p):
            ax.text(p, i + 0.2, f" {p:.0f}", va="center", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{s}\n{w}" for s, w in zip(rows["stage"], rows["what"])], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame")
    ax.set_title("Time per frame by stage", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save(fig, out)
