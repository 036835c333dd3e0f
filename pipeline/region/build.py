"""Config -> models, losses and checkpoints of the two training stages (the config boundary).

``nn.Module``s in :mod:`pipeline.models` take plain arguments; this module is the only place that
reads :class:`~pipeline.region.config.RegionConfig` to build them.

Checkpoints (``stage1.pt``, ``stage2_*.pt``) are ``torch.save`` dicts readable with
``weights_only=True``: ``{"model": state_dict, "meta": {...}}`` where ``meta`` holds the stage,
``streams``, the ``region_model`` config as JSON and its sha256, the steps trained and, for
stage 2, the training mask sources and the sha256 of the stage-1 checkpoint it builds on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline import checkpoint
from pipeline.atomic import atomic_path
from pipeline.config import from_dict
from pipeline.errors import DataError
from pipeline.models.baseline import BaselineSegmenter, build_baseline
from pipeline.models.losses import EQ1_WEIGHTS, SegmentationLoss, weighted_total
from pipeline.models.region_head import RegionSegmenter, build_region_segmenter
from pipeline.provenance import config_hash, config_json
from pipeline.region.config import RegionConfig, check_streams

#: config name -> pipeline.models.region_head pooling name
POOLING = {"roi_align": "align", "roi_pool": "pool"}


def build_stage1_model(cfg: RegionConfig, streams: str) -> BaselineSegmenter:
    """Front-end (RGB-only or two-stream) + DeepLab baseline back-end, from the config."""
    fe = cfg.frontend
    return build_baseline(
        depth=fe.depth, two_stream=check_streams(streams) == "rgbflow", weights=fe.pretrained,
        flow_init=fe.flow_init, reduce_to=fe.reduce_to, aspp=cfg.aspp,
        output_stride=fe.output_stride,
        rates=list(cfg.aspp_rates) if cfg.aspp_rates is not None else None,
    )


def build_stage2_model(cfg: RegionConfig, in_channels: int) -> RegionSegmenter:
    """The region back-end (actor + action region heads) on ``in_channels`` fused features."""
    rh = cfg.region_head
    if rh.pooling not in POOLING:
        raise ValueError(f"region_head.pooling must be one of {sorted(POOLING)}, got {rh.pooling!r}")
    return build_region_segmenter(
        in_channels, pool_size=rh.pool_size, pooling=POOLING[rh.pooling],
        mask_pooling=rh.mask_pooling, hidden_dim=rh.hidden_dim, num_fc=rh.num_fc,
        dropout=rh.dropout, context_region=rh.context_region, binarize=rh.binarize_masks,
    )


def set_stage1_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` every BatchNorm keeps its (ImageNet) statistics and
    affine parameters (DeepLab-v2 practice for small batches)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)


def stage1_param_groups(model: BaselineSegmenter, lr_frontend: float, lr_backend: float
                        ) -> list[dict[str, Any]]:
    """Two SGD groups: front-end (``lr_frontend``) and the two ASPP heads (``lr_backend``)."""
    front = [p for p in model.frontend.parameters() if p.requires_grad]
    back = [p for n, p in model.named_parameters()
            if not n.startswith("frontend.") and p.requires_grad]
    return [{"params": front, "lr": lr_frontend, "name": "frontend"},
            {"params": back, "lr": lr_backend, "name": "backend"}]


def _loss_terms(outputs: dict[str, Tensor], batch: dict[str, Any],
                criterion: SegmentationLoss) -> dict[str, Tensor]:
    terms = criterion({k: v.float() for k, v in outputs.items()},
                      {"actor": batch["actor"], "action": batch["action"]})
    return {"loss": weighted_total(terms, EQ1_WEIGHTS), **terms}


def stage1_loss(criterion: SegmentationLoss):
    """Eq. 1 on the baseline's stride-8 logits (upsampled to the labels)."""
    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        outputs = model(batch["rgb"], batch.get("flow"))
        return _loss_terms(outputs, batch, criterion)
    return loss_fn


def region_inputs(batch: dict[str, Any]) -> list[tuple[Tensor, Tensor]]:
    """Per-frame (boxes, masks) pairs of a collated batch."""
    return list(zip(batch["boxes"], batch["masks"]))


def stage2_forward(model: RegionSegmenter, features: Tensor, batch: dict[str, Any],
                   input_size: tuple[int, int], stride: int, output_stride: int
                   ) -> dict[str, Tensor]:
    """Region back-end logits at ``input_size / output_stride`` for a batch of cached features."""
    out = (-(-input_size[0] // output_stride), -(-input_size[1] // output_stride))
    return model(features.float(), region_inputs(batch), input_size, 1.0 / stride, out)


def stage2_loss(criterion: SegmentationLoss, input_size: tuple[int, int], stride: int,
                output_stride: int):
    """Eq. 1 on the region-to-pixel output (Eq. 2-3), upsampled to the labels."""
    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        outputs = stage2_forward(model, batch["features"], batch, input_size, stride,
                                 output_stride)
        return _loss_terms(outputs, batch, criterion)
    return loss_fn


# -- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: nn.Module, cfg: RegionConfig, **meta: Any) -> None:
    """Final weights + provenance (atomic)."""
    meta = {"config_json": config_json(cfg), "config_sha256": config_hash(cfg), **meta}
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "meta": meta}, tmp)


def load_checkpoint(path: str | Path, stage: str) -> tuple[dict[str, Tensor], dict[str, Any],
                                                           RegionConfig]:
    """(state_dict, meta, the config to rebuild the model with) of a checkpoint of ``stage``.

    The config is the one the checkpoint was trained with, except ``frontend.pretrained``,
    which is cleared: the trained weights replace any initial weights, so the jobs that load a
    checkpoint (features, predictions) never fetch ImageNet weights (no hub, no internet). The
    training-time value stays in ``meta["config_json"]``.

    Raises:
        DataError: naming ``path``: missing, unreadable or refused (see
            :func:`pipeline.checkpoint.read`), or not a checkpoint of ``stage``.
    """
    obj = checkpoint.read(path, f"{stage} checkpoint")
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or "config_json" not in meta:
        raise DataError(path, f"not a {stage} checkpoint of this pipeline (no meta with its "
                              "config); train it with the pipeline's region stages")
    if meta.get("stage") != stage:
        raise DataError(path, f"expected a {stage!r} checkpoint, found {meta.get('stage')!r}")
    state = checkpoint.state_dict_of(obj, path)
    cfg = from_dict(RegionConfig, json.loads(meta["config_json"]), "region_model")
    cfg = dataclasses.replace(cfg, frontend=dataclasses.replace(cfg.frontend, pretrained=None))
    return state, meta, cfg
