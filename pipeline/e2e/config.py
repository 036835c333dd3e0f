"""The ``e2e_model`` config section (defaults live in the schema), the model built from it, and
the checkpoint format shared by the training and prediction stages.

Checkpoint (``results/e2e/{variant}/model.pt``): a ``torch.save`` dict loadable with
``weights_only=True``: ``{"model": state_dict, "meta": {...}}``; ``meta`` holds ``variant``,
``zero_shot_actor`` (None or 1..7), ``config_json`` / ``config_sha256`` (the whole section, from
which :func:`build_from_config` rebuilds the architecture), ``steps``, ``train_frames``,
``final_loss``, ``schedule`` (``joint`` | ``actor_then_action``) and ``init`` (what the
initial weights loaded: :meth:`pipeline.e2e.pretrained.InitReport.as_meta`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pipeline import checkpoint
from pipeline.atomic import atomic_path
from pipeline.config import from_dict
from pipeline.e2e.loss import MultitaskLoss
from pipeline.e2e.model import ABLATIONS, ActorActionRCNN, build_e2e_model
from pipeline.e2e.pretrained import InitReport, initialise
from pipeline.errors import DataError
from pipeline.provenance import config_hash, config_json

__all__ = ["VARIANTS", "E2EConfig", "LossWeights", "build_and_initialise", "build_from_config",
           "criterion", "resolve_device", "save_checkpoint", "load_checkpoint"]

#: The ``{variant}`` wildcard: Table 3 rows. ``joint_off`` is the full architecture trained
#: branch by branch ("w/o joint training"), the others are :data:`ABLATIONS`.
VARIANTS: tuple[str, ...] = (*ABLATIONS, "joint_off")


@dataclass(frozen=True)
class LossWeights:
    rpn_objectness: float  # lambda_1 (RPN objectness: the paper's L_RoI-cls)
    rpn_box: float  # RPN box regression (part of Faster R-CNN's RPN loss)
    box: float  # lambda_2 L_box-reg
    actor: float  # lambda_3 L_actor-cls
    action: float  # lambda_4 L_action-cls
    mask: float  # lambda_5 L_mask


@dataclass(frozen=True)
class E2EConfig:
    depth: int  # ResNet depth of both backbones (paper 101)
    num_frames: int  # context window T (paper 3)
    fpn_channels: int  # pyramid width (paper/Mask R-CNN 256)
    anchor_sizes: tuple[int, ...]  # RPN anchors of levels 0..3 + pool, input pixels
    min_size: int  # shorter side after resizing
    max_size: int  # longer side at most
    trainable_layers: int  # ResNet stages trained in each backbone (5 = all)
    norm: str  # frozen_bn (fine-tuning) | bn (from scratch) | gn (segmenter layout)
    weights: str | None  # appearance stream: None | Mask R-CNN / ResNet file or torchvision name
    motion_weights: str | None  # motion stream: None | ResNet file or torchvision name
    representation_size: int  # width of the box and action MLP heads
    rpn_pre_nms_top_n: tuple[int, int]  # (train, test)
    rpn_post_nms_top_n: tuple[int, int]  # (train, test)
    rpn_batch_size_per_image: int
    box_batch_size_per_image: int
    box_detections_per_img: int
    box_score_thresh: float  # detections kept (before the label map's score_thresh)
    loss_weights: LossWeights
    iterations: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    lr_policy: str  # "constant" | "poly"
    checkpoint_every: int
    score_thresh: float  # label map: instances with a lower actor score are not painted
    mask_thresh: float  # label map: mask probability of a painted pixel
    device: str  # "auto" | "cpu" | "cuda"
    amp: bool
    seed: int
    num_workers: int
    # micro-batches per step and process (gradient accumulation; batch_size stays the global
    # batch). Defaulted: configs of checkpoints written before the key existed still load.
    accumulate: int = 1
    temporal_init: str = "random"  # "random" (paper) | "centre" (identity on the centre frame)


def model_kwargs(cfg: E2EConfig, variant: str) -> dict[str, Any]:
    """Keyword arguments of :func:`build_e2e_model` for ``variant`` under ``cfg``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    kwargs: dict[str, Any] = {
        "depth": cfg.depth, "num_frames": cfg.num_frames, "fpn_channels": cfg.fpn_channels,
        "anchor_sizes": tuple(cfg.anchor_sizes), "min_size": cfg.min_size,
        "max_size": cfg.max_size, "trainable_layers": cfg.trainable_layers,
        "norm": cfg.norm, "representation_size": cfg.representation_size,
        "rpn_pre_nms_top_n": tuple(cfg.rpn_pre_nms_top_n),
        "rpn_post_nms_top_n": tuple(cfg.rpn_post_nms_top_n),
        "rpn_batch_size_per_image": cfg.rpn_batch_size_per_image,
        "box_batch_size_per_image": cfg.box_batch_size_per_image,
        "box_detections_per_img": cfg.box_detections_per_img,
        "box_score_thresh": cfg.box_score_thresh, "temporal_init": cfg.temporal_init,
    }
    kwargs.update(ABLATIONS.get(variant, {}))  # joint_off: the full architecture
    return kwargs


def build_and_initialise(cfg: E2EConfig, variant: str) -> tuple[ActorActionRCNN, InitReport]:
    """The model of ``variant`` with random init (seeded by the caller), then Ji et al.'s
    initialisation from ``cfg.weights`` / ``cfg.motion_weights``
    (:func:`pipeline.e2e.pretrained.initialise`); returns the model and the load report.

    Raises:
        ValueError: ``norm: frozen_bn`` without pretrained weights for a stream that has it (a frozen
            random BatchNorm is the identity: activations of a random ResNet then overflow).
        DataError: the weights cannot be read or do not fit (see ``initialise``).
    """
    model = build_e2e_model(**model_kwargs(cfg, variant))
    if cfg.norm == "frozen_bn" and (not cfg.weights or (model.uses_flow and not cfg.motion_weights)):
        raise ValueError("e2e_model.norm: frozen_bn needs pretrained weights for every stream "
                         "(e2e_model.weights and, with a motion stream, motion_weights); "
                         "training from scratch needs norm bn or gn")
    report = initialise(model, cfg.weights, cfg.motion_weights, cfg.depth)
    return model, report


def build_from_config(cfg: E2EConfig, variant: str, *, init_weights: bool = True) -> ActorActionRCNN:
    """The model of ``variant``; random init (seeded by the caller), plus ``cfg.weights`` and
    ``cfg.motion_weights`` unless ``init_weights`` is False (a trained checkpoint follows:
    then nothing is read or downloaded)."""
    if init_weights:
        return build_and_initialise(cfg, variant)[0]
    return build_e2e_model(**model_kwargs(cfg, variant))


def criterion(cfg: E2EConfig) -> MultitaskLoss:
    return MultitaskLoss(**asdict(cfg.loss_weights))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cuda`` without a GPU raises RuntimeError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("e2e_model.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: E2EConfig, **meta: Any) -> None:
    """Final weights + provenance (atomic)."""
    meta = {"config_json": config_json(cfg), "config_sha256": config_hash(cfg), **meta}
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "meta": meta}, tmp)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any], E2EConfig]:
    """(state_dict, meta, the config it was trained with) of an e2e checkpoint.

    Raises:
        DataError: naming ``path``: missing, unreadable or refused (see
            :func:`pipeline.checkpoint.read`), or not an e2e checkpoint.
    """
    obj = checkpoint.read(path, "e2e checkpoint")
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("variant") not in VARIANTS \
            or "config_json" not in meta:
        raise DataError(path, "not an e2e_model checkpoint (no variant / config in its meta); "
                              "train it with the pipeline's e2e_train stage")
    saved = json.loads(meta["config_json"])
    if "frozen_bn" in saved:  # written before e2e_model.norm replaced the boolean
        saved["norm"] = "frozen_bn" if saved.pop("frozen_bn") else "bn"
    cfg = from_dict(E2EConfig, saved, "e2e_model")
    return checkpoint.state_dict_of(obj, path), meta, cfg
