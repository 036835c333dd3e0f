"""Predict any video file with the trained pipeline: joint actor-action label maps per frame.

    python -m pipeline.predict VIDEO.mp4 --out DIR \\
        --stage1 results/region_model/rgbflow/stage1.pt \\
        [--stage2 results/region_model/rgbflow/stage2_gt+model.pt] \\
        [--segmenter results/segmenter/model.pt] [--config config.yaml] [--every N] [--max-frames N]

Frames 1, 1+N, 1+2N, ... (1-based, at most ``--max-frames``) are decoded, then the existing
per-video stages run on them exactly as in the workflow: flow (``flow`` section; frame t from
(t, t+1), or (t-1, t) at the video's last frame), region masks from the segmenter (``masks`` and
``segmenter`` sections), the stage-1 front-end's features and the region model of ``--stage2``;
without ``--stage2`` the baseline of ``--stage1`` predicts from frames (and flow). Architectures
and input sizes come from the checkpoints; ``region_model.device`` picks the device.

Nothing is created before the checkpoints load and the input is known to be a video: a real
video stream (not, say, a text file that FFmpeg renders as glyphs) whose first frame decodes at
the reported size. The run, caches included, is then written into a temporary folder beside
``DIR`` (``.DIR.predict-<pid>-*``) and swapped in whole by renaming, so ``DIR`` always holds one
complete run: the previous one until the new one is done, never a mix. A killed run leaves its
temporary folder; the next run removes those whose process is gone (and restores the previous
run if the kill fell between the two renames of the swap). An existing ``DIR`` that holds anything
else than a run of this command is refused, never replaced.

Outputs:

- ``DIR/labels.h5`` (stage ``predict``, format 1, the predictions layout of docs/architecture.md):
  ``labels`` (A, H, W) uint8 joint ids at the video's native size, ``frame_ids`` (A,) int32;
  attrs ``video_path``/``video_sha256``, ``stage1``/``stage2``/``segmenter`` (+ ``_sha256``);
- ``DIR/png/{fff}.png``: the same maps as A2D colour PNGs;
- ``DIR/overlay.mp4``: the predicted frames, labelled pixels blended with their palette colour
  (mp4v at fps / N; MPEG-4 needs even sizes, so an odd last row/column is cropped).

Every kept frame is held in memory once while decoding: bound long videos with ``--every`` /
``--max-frames``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.a2d.annotations import write_col_png
from pipeline.a2d.classes import label_to_rgb
from pipeline.atomic import atomic_path
from pipeline.config import defaults, from_dict, load_config, section
from pipeline.errors import DataError
from pipeline.flow.stage import FlowConfig, compute_flow
from pipeline.frames import FramesConfig, frames_to_keep, read_frames_cache, write_frames_cache
from pipeline.h5cache import create_cache, open_cache
from pipeline.index import COLUMNS
from pipeline.masks.config import MasksConfig, SegmenterConfig
from pipeline.masks.run import run_video
from pipeline.provenance import file_sha256
from pipeline.region.build import load_checkpoint
from pipeline.region.features import extract_features
from pipeline.region.predict import FORMAT_VERSION, STAGE, predict_video
from pipeline.video import decode_frames, probe_clip, probe_video, read_frames

log = logging.getLogger("pipeline.predict")
OUTPUTS = ("labels.h5", "overlay.mp4", "png")
OVERLAY_ALPHA = 0.5  # weight of the palette colour on labelled pixels
PID_REUSE_MARGIN_S = 600.0  # a work folder this much older than its live pid's process is stale


@dataclasses.dataclass(frozen=True)
class Settings:
    """The config sections this command reads (``region_model`` only for its ``device``)."""

    flow: FlowConfig
    masks: MasksConfig
    segmenter: SegmenterConfig
    device: str


def load_settings(config: str | Path | None) -> Settings:
    """Sections of ``config`` (validated, schema defaults filled), or the defaults."""
    whole = load_config(config) if config else defaults()
    return Settings(from_dict(FlowConfig, section(whole, "flow"), "flow"),
                    from_dict(MasksConfig, section(whole, "masks"), "masks"),
                    from_dict(SegmenterConfig, section(whole, "segmenter"), "segmenter"),
                    str(section(whole, "region_model")["device"]))


def select_frames(n_frames: int, every: int, max_frames: int | None = None) -> list[int]:
    """1-based frames 1, 1+every, ... of a video of ``n_frames``, at most ``max_frames``."""
    ids = list(range(1, n_frames + 1, every))
    return ids[:max_frames] if max_frames is not None else ids


def cache_frames(video: Path, vid: str, out: Path, every: int, max_frames: int | None,
                 ) -> tuple[list[int], int, float]:
    """Decode the selected frames and their flow partners once; write them as a frames cache.

    Returns:
        (the selected 1-based frame ids, the video's frame count, its fps).
    """
    info = probe_clip(video)
    n = info.n_frames
    ids = select_frames(n, every, max_frames)
    keep = frames_to_keep(ids, 0, n)
    frames, n_decoded = decode_frames(video, keep)
    if n_decoded < keep[-1]:  # the container over-reports its length: trust what decodes
        n = n_decoded
        ids = [i for i in ids if i <= n]
        if not ids:
            raise DataError(video, f"no decodable frame (the container reports {info.n_frames})")
        log.warning("%s: container reports %d frames, %d decode", video, info.n_frames, n)
        keep = frames_to_keep(ids, 0, n)
        if not set(keep) <= set(frames):
            frames = read_frames(video, keep)
    try:
        write_frames_cache(out, video=vid, split="test", frames={k: frames[k] for k in keep},
                           annotated=ids, n_frames=n, fps=info.fps, cfg=FramesConfig(context=0))
    except ValueError as exc:  # frames of different sizes
        raise DataError(video, f"decoded frames change size within the video ({exc})") from None
    return ids, n, info.fps


def write_index(path: Path, vid: str, video: Path, frame_ids: list[int], n_frames: int,
                size: tuple[int, int]) -> Path:
    """A frame index (stage ``index`` columns) listing the selected frames as test frames, which
    is how the per-video stage functions find the frames to work on; no annotation exists."""
    rows = [{"video": vid, "frame": f, "split": "test", "label": 0, "height": size[0],
             "width": size[1], "n_frames": n_frames, "clip": str(video), "mat": "", "col": "",
             "instance_h5": ""} for f in frame_ids]
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def overlay_frame(rgb: np.ndarray, label: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 RGB with every labelled pixel blended with its palette colour (the
    background stays as it is)."""
    blend = rgb.astype(np.float32) * (1 - alpha) + label_to_rgb(label).astype(np.float32) * alpha
    return np.where((label > 0)[..., None], np.rint(blend).astype(np.uint8), rgb)


def write_overlay(path: Path, images, fps: float, size: tuple[int, int]) -> None:
    """Write RGB ``images`` of ``size`` (H, W) as an mp4v video, atomically."""
    h, w = size[0] // 2 * 2, size[1] // 2 * 2
    with atomic_path(path) as tmp:
        # OpenCV picks the container from the file name, so write <tmp>.mp4, then move it.
        named = tmp.with_name(tmp.name + ".mp4")
        writer = cv2.VideoWriter(str(named), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        try:
            if not writer.isOpened():
                raise DataError(path, "OpenCV cannot write an mp4v video")
            for rgb in images:
                writer.write(np.ascontiguousarray(rgb[:h, :w, ::-1]))
            writer.release()
            os.replace(named, tmp)
        finally:
            writer.release()
            named.unlink(missing_ok=True)


def predict_file(video: str | Path, out_dir: str | Path, *, stage1: str | Path,
                 stage2: str | Path | None = None, segmenter: str | Path | None = None,
                 settings: Settings, every: int = 1, max_frames: int | None = None,
                 masks_source: str = "model") -> Path:
    """Run the pipeline on ``video`` and write ``out_dir/{labels.h5,png/,overlay.mp4}``, all
    three swapped in at once (see the module's docstring).

    Raises:
        DataError: naming the file: a missing or unreadable file or one without a video stream,
            a missing or wrong checkpoint, a stage-2 checkpoint trained on another stage-1
            front-end, an ``out_dir`` holding other files. Nothing is created before these
            checks pass.
    """
    video, out_dir, stage1 = Path(video), Path(out_dir), Path(stage1)
    if out_dir.name in ("", ".", ".."):  # the folder is renamed: it needs a name
        out_dir = out_dir.resolve()
    if every < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"--every and --max-frames must be >= 1, got {every}, {max_frames}")
    _, meta1, cfg = load_checkpoint(stage1, "stage1")
    streams, stage1_sha = str(meta1["streams"]), file_sha256(stage1)
    if stage2 is not None:
        stage2 = Path(stage2)
        _, meta2, cfg = load_checkpoint(stage2, "stage2")
        if meta2["stage1_sha256"] != stage1_sha:
            raise DataError(stage2, f"was trained on another stage-1 checkpoint than {stage1}")
        if segmenter is None or not Path(segmenter).is_file():
            raise DataError(segmenter or "--segmenter", "segmenter weights not found (the "
                                                        "region model needs region masks)")
    vid = video.stem or "video"
    probe_video(video)
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work(out_dir)
    work = Path(tempfile.mkdtemp(prefix=f"{work_prefix(out_dir)}{os.getpid()}-",
                                 dir=out_dir.parent))
    try:
        run = work / "run"
        frames_h5 = work / "frames" / f"{vid}.h5"
        ids, n_frames, fps = cache_frames(video, vid, frames_h5, every, max_frames)
        with read_frames_cache(frames_h5) as cache:
            size = (cache.height, cache.width)
        if streams == "rgbflow" and n_frames < 2:
            raise DataError(video, "a video of one frame has no flow pair")
        index = write_index(work / "index.csv", vid, video, ids, n_frames, size)
        # The masks folder is named after its source: predict_video's provenance names it.
        dirs = {k: work / k for k in ("frames", "flow", "features")}
        dirs["masks"] = work / masks_source
        if streams == "rgbflow":
            compute_flow(frames_h5, dirs["flow"] / f"{vid}.h5", settings.flow)
        common = {"index": index, "video": vid, "out": work / "pred.h5", "png_dir": None,
                  "frames_dir": dirs["frames"], "flow_dir": dirs["flow"],
                  "device_name": settings.device}
        if stage2 is None:
            predict_video(model="baseline", stage1=stage1, **common)
        else:
            run_video(vid, masks_source, index=index, out=dirs["masks"] / f"{vid}.h5",
                      cfg=settings.masks, seg=settings.segmenter, frames=frames_h5,
                      weights=Path(segmenter))
            extract_features(index=index, video=vid, frames_dir=dirs["frames"],
                             flow_dir=dirs["flow"], streams=streams, stage1=stage1,
                             out=dirs["features"] / f"{vid}.h5", device_name=settings.device)
            predict_video(model="region", stage2=stage2, features_dir=dirs["features"],
                          masks_dir=dirs["masks"], **common)
        with open_cache(work / "pred.h5", stage=STAGE, format_version=FORMAT_VERSION) as f:
            labels, source = f["labels"][:], str(f.attrs["source"])
            if f["frame_ids"][:].tolist() != ids:
                raise DataError(work / "pred.h5", f"predicted frames differ from {ids}")
        config = {"every": every, "max_frames": max_frames, "region_model":
                  dataclasses.asdict(cfg), "flow": dataclasses.asdict(settings.flow)
                  if streams == "rgbflow" else None}
        if stage2 is not None:
            config.update(masks=dataclasses.asdict(settings.masks), masks_source=masks_source,
                          segmenter=dataclasses.asdict(settings.segmenter))
        attrs = {"video": vid, "video_path": str(video.resolve()),
                 "video_sha256": file_sha256(video), "n_frames": n_frames, "fps": fps,
                 "every": every, "model": "baseline" if stage2 is None else "region",
                 "streams": streams, "stage1": str(stage1), "stage1_sha256": stage1_sha,
                 "stage2": str(stage2 or ""),
                 "stage2_sha256": file_sha256(stage2) if stage2 else "",
                 "segmenter": str(segmenter) if stage2 else "",
                 "segmenter_sha256": file_sha256(segmenter) if stage2 else ""}
        _write_outputs(run, frames_h5, labels, ids, fps / every, config, source, attrs)
        swap_in(run, out_dir, work / "previous")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("%s: %s, %d frames (every %d of %d) at %dx%d -> %s", video, source, len(ids),
             every, n_frames, *size, out_dir)
    return out_dir / "labels.h5"


def _write_outputs(out_dir: Path, frames_h5: Path, labels: np.ndarray, ids: list[int],
                   fps: float, config: dict, source: str, attrs: dict) -> None:
    """PNGs, the overlay and ``labels.h5`` into the (temporary) run folder ``out_dir``."""
    for fid, lab in zip(ids, labels):
        write_col_png(out_dir / "png" / f"{fid:05d}.png", lab)
    with read_frames_cache(frames_h5) as cache:
        write_overlay(out_dir / "overlay.mp4",
                      (overlay_frame(cache.frame(f), lab) for f, lab in zip(ids, labels)),
                      fps if fps > 0 else 25.0, labels.shape[1:])
    _, h, w = labels.shape
    with create_cache(out_dir / "labels.h5", stage=STAGE, module="pipeline.predict",
                      config=config, format_version=FORMAT_VERSION, source=source,
                      **attrs) as f:
        f.create_dataset("labels", data=labels.astype(np.uint8), chunks=(1, h, w),
                         compression="gzip", compression_opts=4)
        f.create_dataset("frame_ids", data=np.asarray(ids, np.int32))


def work_prefix(out_dir: Path) -> str:
    """Name prefix of this command's temporary folders for ``out_dir`` (beside it)."""
    return f".{out_dir.name}.predict-"


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``out_dir`` that exists and is not a run of this command: it is replaced whole.

    Raises:
        DataError: naming ``out_dir`` and what it holds.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(out_dir, "--out exists and is not a folder")
    # .predict-*: the work folders that earlier versions kept inside the output folder
    foreign = sorted(p.name for p in out_dir.iterdir()
                     if p.name not in OUTPUTS and not p.name.startswith(".predict-"))
    if foreign:
        raise DataError(out_dir, f"--out holds files that are not a pipeline.predict run "
                                 f"({', '.join(foreign[:5])}); it would be replaced whole: "
                                 "give a new or empty folder")


def swap_in(run: Path, out_dir: Path, previous: Path) -> None:
    """Make the finished folder ``run`` the new ``out_dir``, the old one moving to ``previous``
    (inside the work folder, removed with it). Two renames within one filesystem: a kill between
    them leaves ``previous`` for :func:`remove_stale_work` to restore."""
    if out_dir.exists():
        os.replace(out_dir, previous)
    os.replace(run, out_dir)


def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds, about 1 s precision) of process ``pid`` from Linux ``/proc``;
    None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _owner_gone(pid: int, folder: Path) -> bool:
    """Whether the process that made ``folder`` has ended: no process ``pid``, this process
    (it has not made its folder yet, so the pid was reused), or a process ``pid`` that started
    after the folder last changed (the pid was reused: the owner started before making it)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    start = _process_start(pid)
    try:
        # /proc start times can be off by tens of seconds (boot time vs. wall clock): only a
        # folder left well before the live process began is taken as stale
        return start is not None and start > folder.stat().st_mtime + PID_REUSE_MARGIN_S
    except OSError:
        return False


def remove_stale_work(out_dir: Path) -> list[Path]:
    """Remove the temporary folders of earlier killed runs for ``out_dir``; runs still going
    keep theirs. If ``out_dir`` is missing and a stale folder holds the previous run, that run
    is put back first. Returns the folders removed."""
    pattern = re.compile(re.escape(work_prefix(out_dir)) + r"(\d+)-\w+")
    removed = []
    for folder in sorted(out_dir.parent.glob(work_prefix(out_dir) + "*")):
        match = pattern.fullmatch(folder.name)
        if not match or not folder.is_dir() or not _owner_gone(int(match[1]), folder):
            continue
        previous = folder / "previous"
        if previous.is_dir() and not out_dir.exists():
            os.replace(previous, out_dir)
            log.warning("%s: restored the previous run from %s (a run was killed while "
                        "swapping it in)", out_dir, folder)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed %s, left by a killed run", folder)
        removed.append(folder)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="any video file OpenCV can decode")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--stage1", type=Path, required=True,
                        help="stage-1 checkpoint (the baseline, and the region model's front-end)")
    parser.add_argument("--stage2", type=Path,
                        help="stage-2 checkpoint trained on --stage1 (region model); without it "
                             "the baseline predicts")
    parser.add_argument("--segmenter", type=Path, default=Path("results/segmenter/model.pt"),
                        help="segmenter weights for the region masks (with --stage2)")
    parser.add_argument("--masks-source", choices=("model", "checkpoint"), default="model",
                        help="model: --segmenter is this pipeline's segmenter; checkpoint: any "
                             "Mask R-CNN weights, classes mapped to actors (stage masks)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="config.yaml (sections flow, masks, segmenter, region_model.device)")
    parser.add_argument("--every", type=int, default=1, help="predict every N-th frame")
    parser.add_argument("--max-frames", type=int, help="predict at most this many frames")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        parser.error("--every and --max-frames must be >= 1")
    try:
        predict_file(args.video, args.out, stage1=args.stage1, stage2=args.stage2,
                     segmenter=args.segmenter, settings=load_settings(args.config),
                     every=args.every, max_frames=args.max_frames,
                     masks_source=args.masks_source)
    except (DataError, ValueError) as exc:  # ValueError: a bad config section
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
