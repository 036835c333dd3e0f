"""Look inside any HDF5 file the pipeline writes, and draw one of its frames.

    python -m pipeline.inspect FILE.h5
    python -m pipeline.inspect FILE.h5 --render OUT.png [--frame N] [--frames FRAMES.h5]

The first form prints the tree: every group and dataset with shape, dtype, chunks, compression,
and all attributes (``*_json`` attributes such as ``config_json`` pretty-printed). ``--render``
draws frame ``N`` (1-based id; default the first annotated/cached frame) according to the file's
``stage`` attribute:

- ``frames``: the RGB frame;
- ``flow``: the Middlebury colour image of the flow, beside the RGB frame if ``--frames`` is given;
- ``masks``: every region's mask in its own colour, its box and ``actor score`` label, over the
  frame from ``--frames`` (over black without it);
- ``predict`` (``labels`` maps): A2D palette colours, over the frame if ``--frames`` is given;
- anything else: the first (T, H, W[, 3]) uint8 dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np

from pipeline.a2d.classes import PALETTE, actor_name
from pipeline.atomic import atomic_path
from pipeline.errors import DataError
from pipeline.flow.encode import flow_to_rgb

log = logging.getLogger("pipeline.inspect")


def _attr_text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return np.array2string(value, threshold=20)
    return str(value)


def _attrs_lines(obj: h5py.HLObject, indent: str) -> list[str]:
    lines = []
    for key in sorted(obj.attrs):
        text = _attr_text(obj.attrs[key])
        if key.endswith("_json"):
            try:
                text = json.dumps(json.loads(text), indent=2, sort_keys=True)
            except ValueError:
                pass
        head, *rest = text.splitlines() or [""]
        lines.append(f"{indent}@{key} = {head}")
        lines.extend(f"{indent}    {r}" for r in rest)
    return lines


def describe(path: str | Path) -> str:
    """The tree of an HDF5 file as text: groups, datasets (shape, dtype, chunks, filters), attrs."""
    path = Path(path)
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataError(path, f"not a readable HDF5 file ({exc})") from exc
    lines = [f"{path}  ({path.stat().st_size / 1e6:.2f} MB)"]
    with f:
        lines += _attrs_lines(f, "  ")

        def visit(name: str, obj: h5py.HLObject) -> None:
            depth = name.count("/") + 1
            pad = "  " * depth
            leaf = name.rsplit("/", 1)[-1]
            if isinstance(obj, h5py.Dataset):
                filt = obj.compression or "none"
                if obj.compression_opts is not None:
                    filt += f"({obj.compression_opts})"
                if obj.shuffle:
                    filt += "+shuffle"
                lines.append(f"{pad}{leaf}: {obj.shape} {obj.dtype} chunks={obj.chunks} "
                             f"compression={filt}")
            else:
                lines.append(f"{pad}{leaf}/")
            lines.extend(_attrs_lines(obj, pad + "  "))

        f.visititems(visit)
    return "\n".join(lines)


def _pick(ids: np.ndarray, frame: int | None, path: Path, what: str) -> int:
    ids = [int(i) for i in ids]
    if not ids:
        raise DataError(path, f"no {what} to render")
    if frame is None:
        return ids[0]
    if frame not in ids:
        raise DataError(path, f"frame {frame} not in this file; {what}: {ids}")
    return frame


def _rgb_frame(frames_path: Path | None, frame: int, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``frame`` from a frames cache, or black when none is given."""
    if frames_path is None:
        return np.zeros((*shape, 3), np.uint8)
    from pipeline.frames import read_frames_cache

    with read_frames_cache(frames_path) as cache:
        if frame not in cache:
            raise DataError(frames_path, f"frame {frame} is not cached")
        img = cache.frame(frame)
    if img.shape[:2] != shape:
        raise DataError(frames_path, f"frame is {img.shape[:2]}, the rendered file {shape}")
    return img


def _region_colour(i: int) -> np.ndarray:
    """A distinct, saturated RGB colour for region ``i`` (golden-angle hue steps)."""
    hsv = np.uint8([[[int(i * 137.508) % 180, 220, 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _render_masks(f: h5py.File, path: Path, frame: int | None,
                  frames_path: Path | None) -> tuple[np.ndarray, int]:
    groups = sorted(k for k in f if isinstance(f[k], h5py.Group) and k.isdigit())
    frame = _pick(np.array([int(g) for g in groups], int), frame, path, "frames")
    g = f[f"{frame:05d}"]
    masks, boxes = g["masks"][:], g["boxes"][:]
    labels, scores = g["labels"][:], g["scores"][:]
    # an empty group may store masks as (0, H, W) or as a placeholder without the frame size
    h, w = masks.shape[1:] if masks.ndim == 3 else _mask_shape(f, path)
    img = _rgb_frame(frames_path, frame, (h, w)).astype(np.float32)
    for i in range(len(masks)):
        alpha = 0.5 * masks[i].astype(np.float32)[..., None] / 255.0
        img = img * (1 - alpha) + _region_colour(i) * alpha
    out = np.clip(img, 0, 255).astype(np.uint8)
    for i in range(len(boxes)):
        colour = tuple(int(c) for c in _region_colour(i))
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, 1)
        cv2.putText(out, f"{actor_name(int(labels[i]))} {scores[i]:.2f}", (x1, max(8, y1 - 2)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    return out, frame


def _mask_shape(f: h5py.File, path: Path) -> tuple[int, int]:
    """(H, W) of a masks file, from any frame group with a region or from the root attrs."""
    for key in f:
        m = f[key].get("masks") if isinstance(f[key], h5py.Group) else None
        if m is not None and m.ndim == 3:
            return int(m.shape[1]), int(m.shape[2])
    if "height" in f.attrs and "width" in f.attrs:
        return int(f.attrs["height"]), int(f.attrs["width"])
    raise DataError(path, "no region in this file tells the frame size")


def _render_labels(labels: np.ndarray, base: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for k, rgb in PALETTE.items():
        lut[k] = rgb
    col = lut[labels]
    fg = (labels > 0)[..., None]
    return np.where(fg, (0.35 * base + 0.65 * col).astype(np.uint8), base)


def render(path: str | Path, out: str | Path, frame: int | None = None,
           frames_path: str | Path | None = None) -> int:
    """Draw frame ``frame`` of ``path`` to the PNG ``out``; returns the frame id drawn."""
    path = Path(path)
    frames_path = Path(frames_path) if frames_path else None
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataError(path, f"not a readable HDF5 file ({exc})") from exc
    with f:
        stage = str(f.attrs.get("stage", ""))
        if stage == "frames":
            ids = f["frame_ids"][:]
            default = int(f["annotated"][0]) if len(f["annotated"]) else None
            frame = _pick(ids, frame if frame is not None else default, path, "cached frames")
            img = f["frames"][int(np.flatnonzero(ids == frame)[0])]
        elif stage == "flow":
            ids = f["frame_ids"][:]
            frame = _pick(ids, frame, path, "flow frames")
            flow = f["flow"][int(np.flatnonzero(ids == frame)[0])].astype(np.float32)
            img = flow_to_rgb(flow)
            if frames_path is not None:
                img = np.concatenate([_rgb_frame(frames_path, frame, flow.shape[:2]), img], axis=1)
        elif stage == "masks":
            img, frame = _render_masks(f, path, frame, frames_path)
        elif "labels" in f and "frame_ids" in f:
            ids = f["frame_ids"][:]
            frame = _pick(ids, frame, path, "frames")
            labels = f["labels"][int(np.flatnonzero(ids == frame)[0])]
            img = _render_labels(labels, _rgb_frame(frames_path, frame, labels.shape))
        else:
            img = _render_generic(f, path, frame)
    with atomic_path(out) as tmp:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
        if not ok:
            raise DataError(out, "PNG encoding failed")
        tmp.write_bytes(buf.tobytes())
    return -1 if frame is None else int(frame)  # -1: a generic file has no frame ids


def _render_generic(f: h5py.File, path: Path, index: int | None) -> np.ndarray:
    """Row ``index`` (0-based here: generic files have no frame ids) of the first image stack."""
    found: list[h5py.Dataset] = []
    f.visititems(lambda _, o: found.append(o) if isinstance(o, h5py.Dataset) and o.ndim in (3, 4)
                 and o.dtype == np.uint8 and (o.ndim == 3 or o.shape[-1] == 3) else None)
    if not found:
        raise DataError(path, "no (T, H, W[, 3]) uint8 dataset to render")
    ds = found[0]
    img = ds[index or 0]
    return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="an HDF5 file written by the pipeline")
    parser.add_argument("--render", type=Path, metavar="OUT.png", help="draw one frame to a PNG")
    parser.add_argument("--frame", type=int, help="1-based frame id to draw (default: the first)")
    parser.add_argument("--frames", type=Path, metavar="FRAMES.h5",
                        help="the video's frames cache, drawn under flow, masks and labels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(describe(args.file))
        if args.render:
            drawn = render(args.file, args.render, args.frame, args.frames)
            log.info("wrote %s (frame %s)", args.render, drawn)
    except DataError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
