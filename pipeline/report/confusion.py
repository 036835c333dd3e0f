"""Raw confusion counts for the heat maps: read from a file, or recomputed from predictions.

The evaluation JSON of :mod:`pipeline.evaluate` holds the scores, not the matrix. The counts are
the (80, 80) int64 ``ConfusionMatrix.counts`` (rows GT label id, columns predicted id), taken
from, in this order of preference:

- a ``.npz`` with an array ``counts`` (what :func:`save_counts` writes);
- a ``.json`` with a key ``confusion_counts`` (80 lists of 80 ints): an evaluation JSON that
  carries it, or a file of its own;
- a predictions folder (``results/predictions/<model>/``): scored again with
  :func:`pipeline.evaluate.evaluate` over the index's frames of ``split`` (same protocol, one more
  pass over the GT).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.a2d.release import Release
from pipeline.errors import DataError
from pipeline.metrics import N_IDS, ConfusionMatrix, save_counts  # noqa: F401 (re-export)

JSON_KEY = "confusion_counts"


def _checked(counts, path: Path) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.shape != (N_IDS, N_IDS) or not np.issubdtype(counts.dtype, np.integer):
        raise DataError(path, f"confusion counts must be ({N_IDS}, {N_IDS}) integers, got "
                              f"{counts.shape} {counts.dtype}")
    if (counts < 0).any():
        raise DataError(path, "negative confusion counts")
    return counts.astype(np.int64)


def load_counts(path: str | Path) -> np.ndarray:
    """(80, 80) int64 counts from a ``.npz`` or ``.json`` file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing confusion file")
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                return _checked(data["counts"], path)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(path, f"unreadable confusion .npz ({exc})") from None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable JSON ({exc})") from None
    if not isinstance(data, dict) or JSON_KEY not in data:
        raise DataError(path, f"no {JSON_KEY!r} key: this JSON carries no confusion matrix")
    return _checked(np.array(data[JSON_KEY], dtype=np.int64), path)


def counts_from_predictions(release: str | Path, index: str | Path, predictions: str | Path,
                            split: str = "test") -> np.ndarray:
    """Score a folder of ``<vid>.h5`` prediction caches again and return the raw counts."""
    from pipeline.config import stage_config
    from pipeline.evaluate import EvalConfig, H5Predictions, eval_frames, evaluate

    rel = Release.at(release)
    frames = eval_frames(rel, Path(index), split)
    if not frames:
        raise DataError(Path(index), f"no annotated {split} frames")
    cfg = stage_config(EvalConfig, "evaluation", {"split": split})
    cm, _, _ = evaluate(rel, frames, H5Predictions(Path(predictions)), cfg)
    return cm.counts.copy()


def counts_from(path: str | Path, release: str | Path | None = None,
                index: str | Path | None = None) -> np.ndarray:
    """Counts from a file or, for a folder, from the predictions in it (needs release, index)."""
    path = Path(path)
    if path.is_dir():
        if release is None or index is None:
            raise DataError(path, "recomputing confusion counts from predictions needs the "
                                  "release and the frame index")
        return counts_from_predictions(release, index, path)
    return load_counts(path)
