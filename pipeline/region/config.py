"""The ``region_model`` config section as frozen dataclasses (defaults live in the schema).

All four stages of :mod:`pipeline.region` read this one section, so the dataclass lives here
rather than in one stage module. Models are built from it in :mod:`pipeline.region.build`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The ``{streams}`` wildcard: RGB-only or two-stream (RGB + colour-coded flow).
STREAMS: tuple[str, ...] = ("rgb", "rgbflow")
#: The ``{source}`` wildcard: where region masks come from (stage ``masks``).
MASK_SOURCES: tuple[str, ...] = ("model", "checkpoint", "gt")


@dataclass(frozen=True)
class FrontendConfig:
    depth: int  # ResNet depth of each stream (18 embedded, 101 in the paper)
    pretrained: str | None  # None | torchvision weights name | local state-dict file
    flow_init: str  # "rgb" (copy the RGB stream) | "random"
    reduce_to: int | None  # per-stream 1x1 channel reduction; None keeps 512/2048
    flow_max_px: float | None  # flow_to_rgb saturation in px; None = per-image max
    output_stride: int  # 8 (the paper: layer3+4 dilated) | 16 (layer4 only, ~4x cheaper)


@dataclass(frozen=True)
class RegionHeadConfig:
    pooling: str  # "roi_align" | "roi_pool"
    pool_size: int
    mask_pooling: bool  # weight pooled bins by the mask ("free-form" pooling, Caesar et al.)
    hidden_dim: int  # width of the hidden FC layers of each region classifier
    num_fc: int
    dropout: float
    context_region: str  # "complement" | "frame" | "none": mask of the whole-frame region
    output_stride: int  # region-to-pixel resolution: input size / output_stride
    # None: mask probabilities in Eq. 2; t: masks >= t become 1, the rest 0 (defaulted: configs
    # of checkpoints written before the key existed still load)
    binarize_masks: float | None = None


@dataclass(frozen=True)
class Stage1Config:
    iterations: int
    batch_size: int
    lr_frontend: float
    lr_backend: float
    momentum: float
    weight_decay: float
    lr_policy: str  # "poly" | "constant"
    freeze_bn: bool
    checkpoint_every: int
    # micro-batches per step and process (gradient accumulation; batch_size stays the global
    # batch). Defaulted: configs of checkpoints written before the key existed still load.
    accumulate: int = 1


@dataclass(frozen=True)
class Stage2Config:
    iterations: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    lr_policy: str
    checkpoint_every: int
    train_sources: tuple[str, ...]  # region masks the back-end is trained with, e.g. (gt, model)
    min_mask_score: float  # generated regions below this detection score are dropped
    accumulate: int = 1  # as Stage1Config.accumulate
    # concat: a frame's regions of all train_sources together; separate: the frame once per
    # source (defaulted: configs of checkpoints written before the key existed still load)
    combine_sources: str = "concat"


@dataclass(frozen=True)
class RegionConfig:
    frontend: FrontendConfig
    input_size: tuple[int, int]  # (H, W) every frame is resized to
    aspp: str  # "v2" | "v3"
    aspp_rates: tuple[int, ...] | None
    region_head: RegionHeadConfig
    stage1: Stage1Config
    stage2: Stage2Config
    joint_background: str  # "product" | "actor" (pipeline.models.joint)
    device: str  # "auto" | "cpu" | "cuda"
    amp: bool
    seed: int
    num_workers: int


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cuda`` without a GPU raises RuntimeError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("region_model.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def check_streams(streams: str) -> str:
    if streams not in STREAMS:
        raise ValueError(f"streams must be one of {STREAMS}, got {streams!r}")
    return streams
