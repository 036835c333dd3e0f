"""Weight files of the segmenter: loading them safely, and the model file the trainer writes.

Every file goes through :mod:`pipeline.checkpoint` (``torch.load(path, weights_only=True)``): a
file whose pickle would build arbitrary objects (and so could run code) is refused with a
DataError naming it.

Accepted layouts: a bare state dict; a dict holding one under ``model`` (our model files,
torchvision's ``references/detection`` checkpoints) or ``state_dict`` (Lightning). Weights may
also be named as torchvision weights (``"MaskRCNN_ResNet50_FPN_Weights.COCO_V1"``,
``"ResNet50_Weights.IMAGENET1K_V1"``), which torchvision downloads into its hub cache: this
needs internet once (or the file in the hub cache, see :func:`pipeline.checkpoint.resolve`),
so the pipeline's own tests only use local files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline import checkpoint
from pipeline.errors import DataError
from pipeline.masks.segmenter import build_segmenter

MODEL_FORMAT = "actorseg.segmenter"
MODEL_FORMAT_VERSION = 1
# Heads whose shape depends on the number of classes: dropped when fine-tuning a model trained
# on other classes (a COCO detector fine-tuned on A2D actors keeps everything else).
CLASS_HEADS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def load_file(path: str | Path) -> Any:
    """:func:`pipeline.checkpoint.read` of a segmenter weights file."""
    return checkpoint.read(path, "segmenter weights file")


def state_dict_of(obj: Any, where: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded weights file (bare, or under ``model`` / ``state_dict``)."""
    return checkpoint.state_dict_of(obj, where)


def resolve_weights(spec: str) -> tuple[dict[str, torch.Tensor], str]:
    """Load weights given as a local path or a torchvision weights name (any spelling
    ``torchvision.models.get_weight`` accepts; see :func:`pipeline.checkpoint.resolve`).

    Returns:
        (state dict, a description for logs and provenance: the path or the weights name).
    """
    return checkpoint.resolve(spec, what="segmenter weights file")


def load_state(module: nn.Module, state: dict[str, torch.Tensor], where: str | Path, *,
               drop_class_heads: bool = False, ignore_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Load ``state`` into ``module`` strictly, except for the parts named.

    Args:
        drop_class_heads: skip the class-dependent heads (:data:`CLASS_HEADS`) when their shape
            differs from the module's (fine-tuning a model trained on other classes).
        ignore_prefixes: keys of ``state`` to leave out (e.g. ``"fc."`` of an ImageNet ResNet).

    Returns:
        The keys that were left out.

    Raises:
        DataError: naming ``where``, with the first missing, unexpected or mis-shaped keys.
    """
    own = module.state_dict()
    skipped = [k for k in state if k.startswith(ignore_prefixes)]
    if drop_class_heads:
        skipped += [k for k in state if k.startswith(CLASS_HEADS) and k in own
                    and own[k].shape != state[k].shape]
    # the skipped class heads' keys, on both sides: they keep the module's fresh init
    checkpoint.load_state(module, state, where, ignore_prefixes=(*ignore_prefixes, *skipped))
    return skipped


def infer_architecture(state: dict[str, torch.Tensor], where: str | Path) -> dict[str, Any]:
    """Depth, normalisation, class count and mask head width of a Mask R-CNN ResNet-FPN state
    dict.

    Used for checkpoints that carry no architecture of their own (e.g. a torchvision COCO
    model): ResNet-18/34 use basic blocks, 50/101 bottlenecks (``conv3``); 34 and 50 both have
    6 blocks in ``layer3``, 101 has 23.
    """
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state:
        raise DataError(where, f"not a Mask R-CNN state dict (no {key})")
    blocks = {k.split(".")[3] for k in state if k.startswith("backbone.body.layer3.")}
    bottleneck = "backbone.body.layer1.0.conv3.weight" in state
    depth = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101}.get(
        (len(blocks), bottleneck))
    if depth is None:
        raise DataError(where, f"backbone is not a ResNet-18/34/50/101 ({len(blocks)} blocks in "
                               f"layer3, bottleneck={bottleneck})")
    # BN (frozen or not) keeps running statistics, GroupNorm does not; in eval mode frozen and
    # trainable BN compute the same thing.
    norm = "frozen_bn" if "backbone.body.bn1.running_mean" in state else "gn"
    head = state.get("roi_heads.mask_head.0.0.weight")
    fpn = state.get("backbone.fpn.inner_blocks.0.0.weight")
    fc6 = state.get("roi_heads.box_head.fc6.weight")
    return {"depth": depth, "norm": norm, "num_classes": int(state[key].shape[0]),
            "mask_head_channels": int(head.shape[0]) if head is not None else 256,
            "fpn_channels": int(fpn.shape[0]) if fpn is not None else 256,
            "representation_size": int(fc6.shape[0]) if fc6 is not None else 1024}


def save_model(path: str | Path, model: nn.Module, arch: dict[str, Any],
               meta: dict[str, Any]) -> None:
    """Write the trained segmenter (atomically): its state dict, the ``build_segmenter``
    arguments that rebuild it, and ``meta`` (plain values: steps, config JSON, ...)."""
    payload = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
               "arch": dict(arch), "meta": dict(meta),
               "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_segmenter(path: str | Path, defaults: dict[str, Any] | None = None,
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a segmenter from a weights file.

    A model file of :func:`save_model` carries its architecture. Any other Mask R-CNN state dict
    (e.g. torchvision's COCO model) gets depth, norm and classes from
    :func:`infer_architecture` and the remaining ``build_segmenter`` arguments (image size,
    anchors) from ``defaults``.

    Returns:
        (the model in eval mode, the ``build_segmenter`` arguments used).
    """
    obj = load_file(path)
    state = state_dict_of(obj, path)
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        arch = dict(obj["arch"])
    else:
        arch = {**(defaults or {}), **infer_architecture(state, path)}
    arch["trainable_layers"] = 0  # inference: nothing trains
    model = build_segmenter(**arch)
    load_state(model, state, path)
    return model.eval(), arch
