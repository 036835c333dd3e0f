"""Annotation files of A2D: ``Annotations/mat/<vid>/<fff>.mat`` (MATLAB v7.3), the colour PNGs
``Annotations/col/<vid>/<fff>.png`` and the A2D-Sentences instance ``.h5`` files.

MATLAB stores arrays column-major, so h5py shows every field with its axes reversed:

==========  ============  ================================  ===========================
field       MATLAB shape  as h5py shows it                  here
==========  ============  ================================  ===========================
reS_id      H x W         (W, H)                            ``label`` (H, W) uint8
reMask      H x W x N     (N, W, H), or (W, H) when N == 1  ``masks`` (N, H, W) bool
reBBox      N x 4         (4, N)                            not read (see below)
id          N x 1         (1, N)                            ``ids`` (N,) int64
==========  ============  ================================  ===========================

**Boxes come from the masks.** ``boxes`` are the tight box of each ``reMask`` instance
(:func:`mask_boxes`: 0-based, far corner exclusive, the torchvision convention), never
``reBBox``: the layout of ``reBBox`` is unconfirmed on a real file (1-based inclusive
``[x1 y1 x2 y2]`` is an assumption) while ``reMask`` is the pixel ground truth every metric
uses, so a box derived from it cannot disagree with its mask whatever ``reBBox`` holds.
:func:`write_mat` still writes ``reBBox`` (1-based inclusive ``[x1 y1 x2 y2]``) so our files
carry every field of the release.

An instance whose ``reMask`` has no pixel has no box and no pixel to score: the reader leaves it
out (with its id and A2D-Sentences instance id) and logs one warning naming the file.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from pipeline.a2d.classes import VALID_PAIRS, is_valid_label, label_to_rgb, rgb_to_label
from pipeline.atomic import atomic_path
from pipeline.errors import DataError

log = logging.getLogger("pipeline.a2d.annotations")


@dataclass
class FrameAnnotation:
    """Ground truth of one annotated frame.

    Attributes:
        label: (H, W) uint8 joint actor-action ids (0 = background).
        masks: (N, H, W) bool instance masks.
        boxes: (N, 4) float32 ``x1, y1, x2, y2``, 0-based, far corner exclusive; as read, the
            tight box of each mask (:func:`mask_boxes`). :func:`write_mat` writes them as
            ``reBBox``.
        ids: (N,) int64 actor-action id of each instance.
        instance: (N,) int64 A2D-Sentences instance ids (consistent within a video), or None.
    """

    label: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    ids: np.ndarray
    instance: np.ndarray | None = None

    def validate(self, where: str | Path) -> FrameAnnotation:
        """Check value ranges and that masks, boxes and ids agree; raise DataError if not."""
        if self.label.ndim != 2:
            raise DataError(where, f"reS_id must be 2-D, got shape {self.label.shape}")
        bad = ~is_valid_label(self.label)
        if bad.any():
            raise DataError(where, "reS_id holds unknown or invalid class id(s) "
                                   f"{sorted(np.unique(self.label[bad]).tolist())}")
        n = len(self.ids)
        if self.masks.shape[0] != n or self.boxes.shape[0] != n:
            raise DataError(where, f"counts disagree: {self.masks.shape[0]} masks, "
                                   f"{self.boxes.shape[0]} boxes, {n} ids")
        if n and self.masks.shape[1:] != self.label.shape:
            raise DataError(where, f"reMask size {self.masks.shape[1:]} != reS_id size "
                                   f"{self.label.shape}")
        bad_ids = [int(i) for i in self.ids if int(i) not in VALID_PAIRS]
        if bad_ids:
            raise DataError(where, f"instance id(s) {bad_ids} are not valid actor-action ids")
        if self.instance is not None and len(self.instance) != n:
            raise DataError(where, f"{len(self.instance)} instance ids for {n} masks")
        return self


def _is_empty(ds: h5py.Dataset) -> bool:
    # MATLAB writes an empty array as its dims with attribute MATLAB_empty = 1.
    return bool(ds.attrs.get("MATLAB_empty", 0))


def _read_masks(ds: h5py.Dataset, hw: tuple[int, int]) -> np.ndarray:
    if _is_empty(ds):
        return np.zeros((0, *hw), dtype=bool)
    arr = np.asarray(ds)
    if arr.ndim == 2:  # one instance: MATLAB drops the trailing singleton dim
        arr = arr.T[None]
    elif arr.ndim == 3:
        arr = arr.transpose(0, 2, 1)
    else:
        raise ValueError(f"reMask has {arr.ndim} dims")
    return arr != 0


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of instance masks.

    Args:
        masks: (N, H, W) bool, every mask with at least one pixel.

    Returns:
        (N, 4) float32 ``x1, y1, x2, y2``: 0-based first column/row of the mask and one past its
        last, so a box holds exactly the mask's pixel rows and columns.

    Raises:
        ValueError: for an empty mask (it has no box).
    """
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        cols, rows = np.flatnonzero(m.any(axis=0)), np.flatnonzero(m.any(axis=1))
        if not len(cols):
            raise ValueError(f"instance {i} has an empty mask")
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def _instances(path: Path, masks: np.ndarray, ids: np.ndarray, instance: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Masks, boxes from the masks, ids and instance ids, instances with an empty mask left out."""
    if len(masks) != len(ids):
        raise DataError(path, f"counts disagree: {len(masks)} masks, {len(ids)} ids")
    if instance is not None and len(instance) != len(ids):
        raise DataError(path, f"{len(instance)} instance ids for {len(ids)} masks")
    keep = masks.any(axis=(1, 2))
    if not keep.all():
        log.warning("%s: left out %d instance(s) with an empty reMask (ids %s)", path,
                    int((~keep).sum()), ids[~keep].tolist())
        masks, ids = masks[keep], ids[keep]
        instance = instance[keep] if instance is not None else None
    return masks, mask_boxes(masks), ids, instance


def _read_vector(ds: h5py.Dataset) -> np.ndarray:
    if _is_empty(ds):
        return np.zeros((0,), dtype=np.int64)
    arr = np.asarray(ds, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise ValueError("non-integer values")
    return arr.astype(np.int64)


def read_annotation(path: str | Path) -> FrameAnnotation:
    """Read a ``.mat`` (v7.3) or A2D-Sentences ``.h5`` annotation and validate it.

    ``boxes`` are derived from ``reMask`` and instances with an empty mask are left out (module
    docstring); ``reBBox`` is not read.

    Raises:
        DataError: naming ``path``, for an unreadable/truncated file, a missing field, an
            unknown class id, or mask/id counts that disagree.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r", locking=False) as f:
            missing = [k for k in ("reS_id", "reMask", "id") if k not in f]
            if missing:
                raise DataError(path, f"missing field(s) {missing}")
            label_raw = np.asarray(f["reS_id"], dtype=np.float64).T
            if not np.all(np.isfinite(label_raw)) or np.any(label_raw != np.round(label_raw)):
                raise DataError(path, "reS_id holds non-integer values")
            label = label_raw.astype(np.int64)
            masks = _read_masks(f["reMask"], label.shape)
            ids = _read_vector(f["id"])
            instance = _read_vector(f["instance"]) if "instance" in f else None
        if masks.shape[1:] != label.shape:
            raise DataError(path, f"reMask size {masks.shape[1:]} != reS_id size {label.shape}")
        masks, boxes, ids, instance = _instances(path, masks, ids, instance)
        ann = FrameAnnotation(label=label, masks=masks, boxes=boxes, ids=ids, instance=instance)
    except DataError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(path, f"unreadable or truncated annotation ({exc})") from exc
    ann.validate(path)
    ann.label = ann.label.astype(np.uint8)
    return ann


def _matlab_header() -> bytes:
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
            f"{_dt.datetime.now():%a %b %d %H:%M:%S %Y} HDF5 schema 1.00 .").encode()
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return header.ljust(512, b"\x00")


def _put(f: h5py.File, name: str, matlab_array: np.ndarray, matlab_class: str) -> None:
    # h5py writes C order; MATLAB reads the reversed axes, so store the transpose.
    ds = f.create_dataset(name, data=np.ascontiguousarray(matlab_array.T))
    ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    if matlab_class == "logical":
        ds.attrs["MATLAB_int_decode"] = np.int32(1)


def write_mat(path: str | Path, ann: FrameAnnotation, with_instance: bool = False) -> None:
    """Write a MATLAB v7.3 ``.mat`` in the release's orientation (atomically).

    With ``with_instance`` the A2D-Sentences ``instance`` field is written too (``.h5`` files).
    """
    ann.validate(path)
    n = len(ann.ids)
    boxes = ann.boxes.astype(np.float64).copy()
    boxes[:, :2] += 1
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            _put(f, "reS_id", ann.label.astype(np.uint8), "uint8")
            masks = ann.masks.astype(np.uint8).transpose(1, 2, 0)  # MATLAB H x W x N
            _put(f, "reMask", masks[:, :, 0] if n == 1 else masks, "logical")
            _put(f, "reBBox", boxes.reshape(n, 4), "double")
            _put(f, "id", ann.ids.astype(np.float64).reshape(n, 1), "double")
            if with_instance:
                inst = ann.instance if ann.instance is not None else np.arange(n)
                _put(f, "instance", np.asarray(inst, np.float64).reshape(n, 1), "double")
        with open(tmp, "r+b") as raw:
            raw.write(_matlab_header())


def read_col_png(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an A2D colour PNG to an (H, W) uint8 label map through the palette.

    Raises DataError naming the file if it is unreadable, not of ``size`` (H, W) when given,
    or holds a colour outside the palette.
    """
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(path, "unreadable PNG")
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise DataError(path, f"expected an RGB PNG, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise DataError(path, f"expected 8-bit colour, got {img.dtype}")
    rgb = img[..., 2::-1]
    if size is not None and rgb.shape[:2] != tuple(size):
        raise DataError(path, f"size {rgb.shape[0]}x{rgb.shape[1]} != expected {size[0]}x{size[1]}")
    try:
        return rgb_to_label(rgb)
    except ValueError as exc:
        raise DataError(path, str(exc)) from None


def write_col_png(path: str | Path, label: np.ndarray) -> None:
    """Write an (H, W) label map as an A2D colour PNG (atomically)."""
    rgb = label_to_rgb(label)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
        if not ok:
            raise DataError(path, "PNG encoding failed")
        tmp.write_bytes(buf.tobytes())
