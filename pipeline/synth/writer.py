"""Write a synthetic dataset as an A2D ``Release/`` folder, atomically as a whole.

The tree is built in ``<out>.tmp.<pid>`` beside ``out`` and renamed onto ``out`` at the end, so
a killed run never leaves a folder that looks like a finished release. With
``instances: true`` the A2D-Sentences folder ``a2d_annotation_with_instances/`` (plus
``a2d_annotation.txt``) is written beside ``Release/`` the same way, before the release appears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.a2d.annotations import FrameAnnotation, write_col_png, write_mat
from pipeline.a2d.classes import ACTIONS, ACTORS, PALETTE, is_valid_label, pair_name
from pipeline.a2d.videoset import VideoRecord, write_videoset
from pipeline.atomic import write_text_atomic
from pipeline.errors import DataError
from pipeline.synth.plan import SynthConfig, VideoPlan, annotated_frames, plan_dataset
from pipeline.synth.scene import Scene, plan_scene, render

log = logging.getLogger("pipeline.synth")
INSTANCES_DIR = "a2d_annotation_with_instances"
QUERIES = "a2d_annotation.txt"
_MARKER = ".actorseg-synth"  # only instance folders carrying it are ever deleted
_VERB = {"climbing": "climbing", "crawling": "crawling", "eating": "eating", "flying": "flying",
         "jumping": "jumping", "rolling": "rolling", "running": "running", "walking": "walking",
         "none": "standing still"}


def frame_annotation(label: np.ndarray, masks: np.ndarray, labels: tuple[int, ...]
                     ) -> FrameAnnotation:
    """GT of one frame from the renderer's output: instances with no visible pixel are left out.

    Args:
        label: (H, W) uint8 joint ids. masks: (N, H, W) bool visible pixels, instance order.
        labels: (N,) pair id of each instance.
    """
    keep = [i for i in range(len(masks)) if masks[i].any()]
    boxes = np.zeros((len(keep), 4), np.float32)
    for row, i in enumerate(keep):
        ys, xs = np.nonzero(masks[i])
        boxes[row] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return FrameAnnotation(label=label, masks=masks[keep], boxes=boxes,
                           ids=np.array([labels[i] for i in keep], np.int64),
                           instance=np.array(keep, np.int64))


def _write_clip(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise DataError(path, "OpenCV cannot open an mp4v video writer")
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    # Codecs can drop or pad frames; the annotations' frame ids are only right if they don't.
    cap = cv2.VideoCapture(str(path))
    n, size = 0, None
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        n, size = n + 1, bgr.shape[:2]
    cap.release()
    if n != len(frames) or size != (h, w):
        raise DataError(path, f"wrote {len(frames)} frames of {h}x{w}, decodes to {n} of {size}")


def _query(scene: Scene, i: int) -> str:
    """A referring expression for instance ``i`` (A2D-Sentences ``a2d_annotation.txt``)."""
    actor = scene.actors[i]
    x = float(np.mean(actor.track.x - scene.cam))
    where = "on the left" if x < scene.width / 3 else "on the right" if x > 2 * scene.width / 3 \
        else "in the middle"
    action = _VERB[ACTIONS[actor.label % 10 - 1]]
    return f"{actor.look.name} {ACTORS[actor.label // 10 - 1]} {action} {where}"


@dataclass(frozen=True)
class RenderedClip:
    """A video rendered in memory.

    Attributes:
        scene: the scene it was rendered from.
        images: T frames, (H, W, 3) uint8 RGB.
        annotations: 1-based annotated frame id -> its ground truth.
    """

    scene: Scene
    images: list[np.ndarray]
    annotations: dict[int, FrameAnnotation]


def render_clip(plan: VideoPlan, cfg: SynthConfig) -> RenderedClip:
    """Render every frame of a planned video and the ground truth of its annotated frames."""
    rng = np.random.default_rng((*plan.seed, 0))
    scene = plan_scene(rng, list(plan.labels), cfg.height, plan.width, plan.frames,
                       cfg.pan, cfg.noise, cfg.actor_scale)
    noise_rng = np.random.default_rng((*plan.seed, 1))  # sensor noise: its own stream
    wanted = set(annotated_frames(plan.frames, cfg.annotated))
    images, annotations = [], {}
    for t in range(plan.frames):
        image, label, masks = render(scene, t, noise_rng)
        images.append(image)
        if t + 1 in wanted:
            annotations[t + 1] = frame_annotation(label, masks, plan.labels)
    return RenderedClip(scene, images, annotations)


def write_video(root: Path, plan: VideoPlan, cfg: SynthConfig, instances: Path | None
                ) -> tuple[VideoRecord, list[str]]:
    """Render one video and write its clip and annotations under ``root`` (a Release folder).

    Returns its videoset row and its A2D-Sentences query rows (empty without ``instances``).
    """
    clip = render_clip(plan, cfg)
    for frame, ann in clip.annotations.items():
        name = f"{frame:05d}"
        write_mat(root / "Annotations" / "mat" / plan.vid / f"{name}.mat", ann)
        write_col_png(root / "Annotations" / "col" / plan.vid / f"{name}.png", ann.label)
        if instances is not None:
            write_mat(instances / plan.vid / f"{name}.h5", ann, with_instance=True)
    _write_clip(root / "clips320H" / f"{plan.vid}.mp4", clip.images, cfg.fps)
    seconds = int(np.ceil(plan.frames / cfg.fps))
    rec = VideoRecord(vid=plan.vid, label=plan.labels[0], timestart=_hms(plan.start),
                      timeend=_hms(plan.start + seconds), height=cfg.height, width=plan.width,
                      frames=plan.frames, anno=len(clip.annotations), test=plan.test)
    queries = [f"{plan.vid},{i},{_query(clip.scene, i)}" for i in range(len(plan.labels))] \
        if instances is not None else []
    return rec, queries


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _readme() -> str:
    lines = ["Synthetic A2D-format release written by actorseg (python -m pipeline.synth).",
             "Colour palette of Annotations/col:", "NAME ID Valid R G B"]
    for label, (r, g, b) in PALETTE.items():
        valid = int(bool(is_valid_label(np.array(label))))
        lines.append(f"{pair_name(label)} {label} {valid} {r} {g} {b}")
    return "\n".join(lines) + "\n"


def _tmp_dir(path: Path) -> Path:
    for stale in path.parent.glob(f"{path.name}.tmp.*"):  # leftovers of killed runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.mkdir(parents=True)
    return tmp


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move finished folder ``tmp`` onto ``path`` (a rename cannot overwrite a non-empty dir)."""
    old = path.with_name(f"{path.name}.old.{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def generate_release(out: Path, cfg: SynthConfig) -> list[VideoRecord]:
    """Write a complete synthetic A2D ``Release/`` tree at ``out``; return its videoset rows."""
    out = Path(out)
    plans = plan_dataset(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_dir(out)
    inst_out = out.parent / INSTANCES_DIR
    inst_tmp = _tmp_dir(inst_out) if cfg.instances else None
    try:
        records, queries = [], ["video_id,instance_id,query"]
        for k, plan in enumerate(plans, start=1):
            rec, q = write_video(tmp, plan, cfg, inst_tmp)
            records.append(rec)
            queries.extend(q)
            log.info("video %d/%d %s: %s, %d frames, %s", k, len(plans), plan.vid,
                     "+".join(pair_name(p) for p in plan.labels), plan.frames, rec.split)
        write_videoset(tmp / "videoset.csv", records)
        write_text_atomic(tmp / "README", _readme())
        if inst_tmp is not None:
            write_text_atomic(inst_tmp / _MARKER, "written by python -m pipeline.synth\n")
            write_text_atomic(out.parent / QUERIES, "\n".join(queries) + "\n")
            _replace_dir(inst_tmp, inst_out)
        elif (inst_out / _MARKER).is_file():
            # Instances of an earlier synthetic release would be picked up beside this one.
            shutil.rmtree(inst_out)
            (out.parent / QUERIES).unlink(missing_ok=True)
        _replace_dir(tmp, out)
    finally:
        for left in (tmp, inst_tmp):
            if left is not None:
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(left)
    return records
