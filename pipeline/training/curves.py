"""Loss histories as files: CSV (one row per step) and a PNG plot."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

from pipeline.atomic import atomic_path

#: ``{"step": [...], "loss": [...], other logged terms...}``: one value per completed step.
History = dict[str, list[float]]
HistoryWriter = Callable[[History], None]


def write_curves(history: History, csv_path: Path | None, png_path: Path | None,
                 title: str = "") -> None:
    """Loss history (``step`` plus one list per logged term) -> CSV and a PNG plot (Agg)."""
    keys = list(history)
    if csv_path is not None:
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for row in zip(*(history[k] for k in keys)):
                w.writerow([int(row[0])] + [f"{x:.6g}" for x in row[1:]])
    if png_path is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for k in keys:
            if k.startswith("loss"):
                ax.plot(history["step"], history[k], label=k, lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


def curve_writer(csv_path: Path | None, png_path: Path | None, title: str = "") -> HistoryWriter:
    """A :class:`~pipeline.training.engine.Trainer` ``curves`` argument writing both files."""
    return lambda history: write_curves(history, csv_path, png_path, title)


def loss_decreased(history: History, key: str = "loss", frac: float = 0.2) -> float:
    """Mean of the last ``frac`` of ``key`` divided by the mean of the first ``frac``."""
    values = history[key]
    k = max(1, int(len(values) * frac))
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    return last / first if first > 0 else math.inf
