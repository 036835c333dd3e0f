"""A2D segmentation metrics: one confusion matrix over the whole test set, three settings.

The protocol (``shared/docs/a2d-format.md`` section 6, the evaluator of Xu et al. as extended by
Kalogeiton et al. 2017, reused by Dang et al. 2018 and Ji et al. 2018):

- pixels of every test frame are accumulated into **one** confusion matrix of pixel counts,
  never averaged per frame;
- the raw matrix is indexed by label id (``10 * actor + action``, 0 = background): rows are GT
  ids (background or one of the 43 valid pairs), columns are predicted ids (any of the 64 palette
  ids, the 20 invalid pairs included);
- **joint** (44 classes: background + 43 valid pairs): a predicted invalid pair is wrong for
  every GT class and is no class's false positive (an extra "invalid" column);
  **actor** (8 classes, ``id // 10``) and **action** (10 classes, ``id % 10``) are block sums of
  the raw matrix, so the digits of an invalid pair are scored there (14 on GT 11: right actor,
  wrong action);
- per setting, in percent, background included: ``glo`` = correct / all GT pixels; ``ave`` =
  mean over classes of correct_c / GT_c; ``miou`` = mean of TP / (TP + FP + FN). Both means run
  over the classes **with GT pixels**: a class absent from the GT has no defined accuracy, and
  counting its IoU as 0 would penalise a model for a class the test set does not contain. On the
  real A2D test split every class has GT pixels, so this only matters for small/synthetic sets;
  ``n_classes_with_gt`` is reported so a reader can tell.

Sanity values (tested): a perfect prediction gives 100 everywhere; all-background gives
ave = 100/8, 100/10, 100/44 when every class has GT pixels.

The **non-boundary** evaluation of Dang et al. (Table 2) drops "a narrow band around the ground
truth label changes ... width 15 pixels"; the paper gives no finer definition, ours is in
:func:`non_boundary_mask`.

Usage (torchvision ``ConfusionMatrix`` style)::

    cm = ConfusionMatrix()
    for gt, pred in frames:           # (H, W) uint8 label maps
        cm.update(gt, pred)
    cm.compute()["joint"]["miou"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.a2d.classes import (
    JOINT_IDS,
    NUM_ACTIONS,
    NUM_ACTORS,
    action_name,
    actor_name,
    is_palette_id,
    is_valid_label,
    pair_name,
)

#: Raw label ids index 0..79 (ids ending in 0 other than background never occur).
N_IDS = 80
SETTINGS: tuple[str, ...] = ("actor", "action", "joint")
#: Width in pixels of the band around GT label changes dropped by the non-boundary evaluation.
DANG_BOUNDARY_WIDTH = 15


@dataclass(frozen=True)
class Setting:
    """How raw label ids map onto the classes of one evaluation setting.

    Attributes:
        name: ``actor``, ``action`` or ``joint``.
        class_ids: (K,) the setting's class ids, background (0) first.
        names: K human-readable class names.
        lut: (80,) int64 raw id -> class index 0..K-1, or K ("no class of this setting": only
            invalid pairs in the joint setting).
    """

    name: str
    class_ids: tuple[int, ...]
    names: tuple[str, ...]
    lut: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)


def _setting(name: str, class_ids: tuple[int, ...], names: tuple[str, ...], key) -> Setting:
    lut = np.full(N_IDS, len(class_ids), dtype=np.int64)
    index = {c: i for i, c in enumerate(class_ids)}
    for raw in range(N_IDS):
        if is_palette_id(np.array(raw)):
            lut[raw] = index.get(key(raw), len(class_ids))
    return Setting(name, class_ids, names, lut)


ACTOR = _setting("actor", tuple(range(NUM_ACTORS + 1)),
                 tuple(actor_name(a) for a in range(NUM_ACTORS + 1)), lambda i: i // 10)
ACTION = _setting("action", tuple(range(NUM_ACTIONS + 1)),
                  tuple(action_name(a) for a in range(NUM_ACTIONS + 1)), lambda i: i % 10)
JOINT = _setting("joint", JOINT_IDS, tuple(pair_name(i) for i in JOINT_IDS), lambda i: i)
SETTING_BY_NAME: dict[str, Setting] = {s.name: s for s in (ACTOR, ACTION, JOINT)}
_VALID_GT = is_valid_label(np.arange(N_IDS))  # (80,) bool: ids the GT may hold
_PALETTE = is_palette_id(np.arange(N_IDS))  # (80,) bool: ids a prediction may hold


def setting_matrix(counts: np.ndarray, setting: Setting) -> np.ndarray:
    """Fold the raw (80, 80) counts into the setting's (K, K + 1) matrix.

    Row = GT class, column = predicted class; the last column counts predictions that are no
    class of the setting (invalid pairs, joint only), which are wrong but nobody's false positive.
    """
    k = setting.num_classes
    rows = setting.lut[:, None] * (k + 1) + setting.lut[None, :]  # (80, 80) flat target cell
    folded = np.bincount(rows.ravel(), weights=counts.ravel().astype(np.float64),
                         minlength=(k + 1) * (k + 1))
    # Row K would hold GT ids outside the setting; update() never lets such GT in.
    return folded.reshape(k + 1, k + 1)[:k].astype(np.int64)


def scores(matrix: np.ndarray) -> dict:
    """Metrics of one setting from its (K, K + 1) matrix (see :func:`setting_matrix`).

    Returns:
        ``glo``, ``ave``, ``miou`` in percent (NaN when there are no GT pixels at all);
        ``accuracy`` and ``iou``: (K,) float64 per class in percent, NaN where a class has no GT
        pixels; ``gt_pixels`` (K,) int64; ``n_classes``, ``n_classes_with_gt``.
    """
    k = matrix.shape[0]
    tp = np.diag(matrix[:, :k]).astype(np.float64)
    gt = matrix.sum(axis=1).astype(np.float64)  # includes the "invalid" column
    predicted = matrix[:, :k].sum(axis=0).astype(np.float64)
    has_gt = gt > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(has_gt, 100.0 * tp / gt, np.nan)
        iou = np.where(has_gt, 100.0 * tp / (gt + predicted - tp), np.nan)
    total = gt.sum()
    n_gt = int(has_gt.sum())
    return {
        "glo": float(100.0 * tp.sum() / total) if total else math.nan,
        "ave": float(acc[has_gt].mean()) if n_gt else math.nan,
        "miou": float(iou[has_gt].mean()) if n_gt else math.nan,
        "accuracy": acc,
        "iou": iou,
        "gt_pixels": gt.astype(np.int64),
        "n_classes": k,
        "n_classes_with_gt": n_gt,
    }


class ConfusionMatrix:
    """Pixel counts of (GT id, predicted id) over any number of frames.

    ``counts`` is (80, 80) int64 indexed ``[gt_id, pred_id]``. Memory is constant: each frame is
    reduced to counts by :meth:`update` and can be dropped.
    """

    def __init__(self) -> None:
        self.counts = np.zeros((N_IDS, N_IDS), dtype=np.int64)
        self.n_frames = 0

    def reset(self) -> None:
        self.counts[:] = 0
        self.n_frames = 0

    def update(self, gt: np.ndarray, pred: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Add one frame.

        Args:
            gt: (H, W) integer GT label map: background or the 43 valid pairs.
            pred: (H, W) integer predicted label map: any of the 64 palette ids.
            keep: optional (H, W) bool, pixels to count (e.g. :func:`non_boundary_mask`).

        Raises:
            ValueError: on a shape mismatch, a GT id that is not a valid class, or a predicted
                id without a palette colour (callers turn it into a DataError naming the file).
        """
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape or gt.ndim != 2:
            raise ValueError(f"prediction of shape {pred.shape} for GT of shape {gt.shape}")
        if keep is not None and keep.shape != gt.shape:
            raise ValueError(f"pixel mask of shape {keep.shape} for GT of shape {gt.shape}")
        for name, arr in (("GT", gt), ("prediction", pred)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name} must hold integer ids, got {arr.dtype}")
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= N_IDS):
                raise ValueError(f"{name} holds id(s) that are no A2D palette id (min "
                                 f"{int(arr.min())}, max {int(arr.max())})")
        # Validate on per-id histograms, not per pixel: np.isin over every pixel of every frame
        # costs more than the whole update. The whole frame is checked, whatever ``keep`` says.
        bad = (np.bincount(gt.ravel(), minlength=N_IDS) > 0) & ~_VALID_GT
        if bad.any():
            raise ValueError(f"GT holds invalid class id(s) {np.flatnonzero(bad).tolist()}")
        bad = (np.bincount(pred.ravel(), minlength=N_IDS) > 0) & ~_PALETTE
        if bad.any():
            raise ValueError("prediction holds id(s) outside the 64 palette ids "
                             f"{np.flatnonzero(bad).tolist()[:10]}")
        flat = gt.astype(np.int64) * N_IDS + pred  # (H, W) raw cell index
        if keep is not None:
            flat = flat[keep]
        counts = np.bincount(flat.ravel(), minlength=N_IDS * N_IDS).reshape(N_IDS, N_IDS)
        self.counts += counts
        self.n_frames += 1

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts into this one (e.g. from parallel workers)."""
        self.counts += other.counts
        self.n_frames += other.n_frames
        return self

    def matrix(self, setting: str) -> np.ndarray:
        """The (K, K + 1) matrix of ``setting`` (``actor``, ``action`` or ``joint``)."""
        return setting_matrix(self.counts, SETTING_BY_NAME[setting])

    def compute(self) -> dict[str, dict]:
        """``{setting: scores(...)}`` for actor, action and joint (see :func:`scores`)."""
        return {name: scores(self.matrix(name)) for name in SETTINGS}

    def summary(self) -> dict[str, dict[str, float]]:
        """``{setting: {"ave", "glo", "miou", "n_classes_with_gt"}}``, JSON-ready."""
        out = {}
        for name, s in self.compute().items():
            out[name] = {"ave": s["ave"], "glo": s["glo"], "miou": s["miou"],
                         "n_classes": s["n_classes"], "n_classes_with_gt": s["n_classes_with_gt"]}
        return out

    def per_class(self) -> list[dict]:
        """One row per class of every setting: setting, class_id, name, gt_pixels, accuracy, iou.

        The joint rows are the per-category accuracies of Dang et al. Table 5 (accuracy and IoU
        in percent; None where the class has no GT pixels).
        """
        rows = []
        for name, s in self.compute().items():
            setting = SETTING_BY_NAME[name]
            for i, cid in enumerate(setting.class_ids):
                acc, iou = s["accuracy"][i], s["iou"][i]
                rows.append({
                    "setting": name, "class_id": cid, "name": setting.names[i],
                    "gt_pixels": int(s["gt_pixels"][i]),
                    "accuracy": None if np.isnan(acc) else float(acc),
                    "iou": None if np.isnan(iou) else float(iou),
                })
        return rows


def label_changes(gt: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower 4-neighbour has a different GT label.

    Marking one side of each change (forward differences) gives a line 1 px wide along every
    label boundary; the image border is not a label change.
    """
    gt = np.asarray(gt)
    edge = np.zeros(gt.shape, dtype=bool)
    edge[:, :-1] |= gt[:, :-1] != gt[:, 1:]
    edge[:-1, :] |= gt[:-1, :] != gt[1:, :]
    return edge


def non_boundary_mask(gt: np.ndarray, width: int = DANG_BOUNDARY_WIDTH) -> np.ndarray:
    """(H, W) bool: the pixels kept by the non-boundary evaluation (True = scored).

    Our reading of Dang et al. ("a narrow band around the ground truth label changes, ... width
    15 pixels"): the band holds every pixel whose Euclidean distance to the 1-px change line of
    :func:`label_changes` is at most ``(width - 1) / 2``, i.e. the line dilated by a disk of
    diameter ``width``. Across a straight boundary the band is exactly ``width`` pixels wide:
    ``(width + 1) / 2`` on the side carrying the line and ``(width - 1) / 2`` on the other (an
    odd width cannot be centred on an edge that lies between two pixels). A frame without label
    changes keeps every pixel.

    Args:
        gt: (H, W) integer GT label map.
        width: total band width in pixels, a positive odd integer (15 in the paper).
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"boundary band width must be a positive odd integer, got {width}")
    edge = label_changes(gt)
    if not edge.any():
        return np.ones(edge.shape, dtype=bool)
    # Distance of every pixel to the nearest change pixel: distanceTransform measures the
    # distance to the nearest zero, so zero the change line. DIST_MASK_PRECISE is exact L2.
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist > (width - 1) / 2


def save_counts(path: str | Path, cm: ConfusionMatrix) -> None:
    """Write ``counts`` (80, 80) int64 and ``n_frames`` to a ``.npz`` (atomically), so the
    report draws heat maps without scoring the predictions a second time."""
    from pipeline.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, counts=cm.counts, n_frames=np.int64(cm.n_frames))



#: How the video-averaged IoU is named wherever it is shown.
VIDEO_AVERAGED_LABEL = ("per-frame, video-averaged IoU, as MED-VT reports; not the A2D protocol")
VIDEO_AVERAGED_DEFINITION = (
    "per annotated frame f at native size: C_f = non-background labels present in GT or "
    "prediction (joint ids; actor or action digits); IoU_f = mean over c in C_f of "
    "|g=c and p=c| / |g=c or p=c|; frames with empty C_f skipped; a video's score = mean IoU_f "
    "of its frames; the number = mean over videos (with a scored frame), in percent")
#: Raw id -> class id of each setting for the video-averaged IoU (background is 0 in all three).
_KEY = {"actor": np.arange(N_IDS) // 10, "action": np.arange(N_IDS) % 10,
        "joint": np.arange(N_IDS)}


def frame_iou(counts: np.ndarray, setting: str) -> float:
    """IoU_f of one frame in ``setting`` from its raw (80, 80) ``[gt_id, pred_id]`` pixel counts:
    the mean over the non-background classes present in GT or prediction of TP / (GT + P - TP),
    a fraction in [0, 1]; NaN when no such class is present (the frame is then skipped).

    In the joint setting a predicted invalid pair is a class of its own (it is in C_f, IoU 0).
    """
    key = _KEY[setting]
    n = int(key.max()) + 1
    cells = (key[:, None] * n + key[None, :]).ravel()
    folded = np.bincount(cells, weights=counts.ravel().astype(np.float64),
                         minlength=n * n).reshape(n, n)
    tp = np.diag(folded)
    union = folded.sum(axis=1) + folded.sum(axis=0) - tp
    present = union > 0
    present[0] = False  # background never counts
    if not present.any():
        return math.nan
    return float((tp[present] / union[present]).mean())


class VideoAveragedIoU:
    """The per-frame, video-averaged IoU that MED-VT (CVPR 2023) reports as "mIoU" on A2D.

    Not the A2D protocol (:class:`ConfusionMatrix`): per frame, without background, over the
    classes present in that frame, then averaged per video and over videos. A frame where a
    class is small weighs as much as one where it fills the image, and a video of 2 annotated
    frames as much as one of 10, so the two numbers are not comparable. Definition:
    :data:`VIDEO_AVERAGED_DEFINITION`.

    Usage: ``update(video, gt, pred)`` per frame (both (H, W) integer id maps, already validated
    by :meth:`ConfusionMatrix.update`), then :meth:`compute`.
    """

    def __init__(self) -> None:
        # {setting: {video: [IoU_f of its scored frames]}}
        self.frames: dict[str, dict[str, list[float]]] = {s: {} for s in SETTINGS}
        self.skipped = dict.fromkeys(SETTINGS, 0)

    def update(self, video: str, gt: np.ndarray, pred: np.ndarray) -> None:
        flat = np.asarray(gt).astype(np.int64) * N_IDS + np.asarray(pred)
        counts = np.bincount(flat.ravel(), minlength=N_IDS * N_IDS).reshape(N_IDS, N_IDS)
        for setting in SETTINGS:
            iou = frame_iou(counts, setting)
            scored = self.frames[setting].setdefault(video, [])
            if math.isnan(iou):
                self.skipped[setting] += 1
            else:
                scored.append(iou)

    def compute(self) -> dict:
        """``{"actor"|"action"|"joint": percent or None, "label", "definition",
        "n_videos", "n_frames_scored", "n_frames_skipped"}`` (per-setting counts), JSON-ready.
        A video none of whose frames is scored has no score and is left out of the mean."""
        out: dict = {"label": VIDEO_AVERAGED_LABEL, "definition": VIDEO_AVERAGED_DEFINITION}
        n_videos, n_scored = {}, {}
        for setting in SETTINGS:
            per_video = [float(np.mean(v)) for v in self.frames[setting].values() if v]
            out[setting] = 100.0 * float(np.mean(per_video)) if per_video else None
            n_videos[setting] = len(per_video)
            n_scored[setting] = sum(len(v) for v in self.frames[setting].values())
        out.update(n_videos=n_videos, n_frames_scored=n_scored,
                   n_frames_skipped=dict(self.skipped))
        return out
