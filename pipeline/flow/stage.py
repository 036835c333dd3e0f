"""The flow stage: frames cache -> flow cache, with the backend chosen by ``flow.backend``.

Flow is computed for every annotated frame and its context window (``frames.context`` frames
each side, clipped to the clip), from frame t to t+1, or from t-1 to t at the clip's last frame;
``pair`` in the cache records which. Non-finite flow fails the video: it is never cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.flow.cache import write_flow_cache
from pipeline.frames import flow_frame_ids, flow_pair, read_frames_cache
from pipeline.provenance import file_sha256

log = logging.getLogger("pipeline.flow")


@dataclass(frozen=True)
class FlowConfig:
    backend: str  # "dis" | "ptlflow"
    dis_preset: str  # "ultrafast" | "fast" | "medium"
    model: str  # ptlflow model name, e.g. "flownets"
    checkpoint: str | None  # ptlflow weights: local file or ptlflow checkpoint name
    batch_size: int  # frame pairs per forward pass (ptlflow)
    device: str  # "auto" | "cpu" | "cuda" (ptlflow)


def _build_dis(cfg: FlowConfig):
    from pipeline.flow.dis import DISFlow

    return DISFlow(cfg.dis_preset)


def _build_ptlflow(cfg: FlowConfig):
    from pipeline.flow.ptlflow_backend import PtlflowFlow

    return PtlflowFlow(cfg.model, cfg.checkpoint, cfg.device, cfg.batch_size)


#: ``flow.backend`` -> builder. Imports are deferred so DIS runs never import torch/ptlflow.
BACKENDS = {"dis": _build_dis, "ptlflow": _build_ptlflow}


def build_backend(cfg: FlowConfig):
    """The configured backend: a callable (B, H, W, 3) uint8 x2 -> (B, H, W, 2) float32, with
    ``name``, ``model``, ``checkpoint`` and ``batch_size`` attributes."""
    try:
        return BACKENDS[cfg.backend](cfg)
    except KeyError:
        raise ValueError(f"unknown flow.backend {cfg.backend!r}; choose from "
                         f"{sorted(BACKENDS)}") from None


def compute_flow(frames_path: str | Path, out: str | Path, cfg: FlowConfig, backend=None) -> Path:
    """Compute and write the flow cache of one video.

    Args:
        frames_path: the video's frames cache (stage ``frames``).
        out: flow cache to write (atomically: nothing appears at ``out`` on failure).
        backend: a built backend (default: :func:`build_backend` of ``cfg``).

    Raises:
        DataError: naming ``frames_path`` if a pair frame is missing from it or the backend
            returns non-finite flow.
    """
    frames = read_frames_cache(frames_path)
    backend = backend if backend is not None else build_backend(cfg)
    ids = flow_frame_ids(frames.annotated, frames.context, frames.n_frames)
    pairs = [flow_pair(t, frames.n_frames) for t in ids]
    missing = sorted({f for p in pairs for f in p if f not in frames})
    if missing:
        raise DataError(frames_path, f"frames {missing} needed for flow are not cached")
    flows = np.empty((len(ids), frames.height, frames.width, 2), np.float32)
    bs = max(1, int(backend.batch_size))
    with frames:
        for start in range(0, len(pairs), bs):
            chunk = pairs[start:start + bs]
            first = frames.frames([a for a, _ in chunk])
            second = frames.frames([b for _, b in chunk])
            flow = backend(first, second)
            if not np.isfinite(flow).all():
                bad = [ids[start + i] for i in range(len(chunk)) if not np.isfinite(flow[i]).all()]
                raise DataError(frames_path, f"{backend.name} flow is NaN/inf for frames {bad}; "
                                             "nothing cached")
            flows[start:start + len(chunk)] = flow
    attrs = {"video": frames.video, "split": frames.split, "backend": backend.name,
             "model": backend.model, "checkpoint": backend.checkpoint}
    if backend.checkpoint and Path(backend.checkpoint).is_file():
        attrs["checkpoint_sha256"] = file_sha256(backend.checkpoint)
    try:
        write_flow_cache(out, flows=flows, frame_ids=ids, pairs=pairs, config=cfg,
                         source=f"{backend.name}:{backend.model}:{backend.checkpoint}", **attrs)
    except ValueError as exc:  # beyond float16 range
        raise DataError(frames_path, f"{backend.name} flow cannot be cached: {exc}") from exc
    mags = np.linalg.norm(flows, axis=-1)
    log.info("%s: %d flows with %s (%s), median |flow| %.2f px, max %.1f px", frames.video,
             len(ids), backend.name, backend.model, float(np.median(mags)), float(mags.max()))
    return Path(out)
