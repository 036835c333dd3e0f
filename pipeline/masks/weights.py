"""Weight files of the segmenter: loading them safely, and the model file the trainer writes.

Every file goes through ``torch.load(path, weights_only=True)``: a file whose pickle would build
arbitrary objects (and so could run code) is refused with a DataError naming it, never loaded
with ``weights_only=False``.

Accepted layouts: a bare state dict; a dict holding one under ``model`` (our model files,
torchvision's ``references/detection`` checkpoints) or ``state_dict`` (Lightning). Weights may
also be named as torchvision weights (``"MaskRCNN_ResNet50_FPN_Weights.COCO_V1"``,
``"ResNet50_Weights.IMAGENET1K_V1"``), which torchvision downloads into its hub cache: this
needs internet once, so the pipeline's own tests only use local files.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.errors import DataError
from pipeline.masks.segmenter import build_segmenter

MODEL_FORMAT = "actorseg.segmenter"
MODEL_FORMAT_VERSION = 1
# Heads whose shape depends on the number of classes: dropped when fine-tuning a model trained
# on other classes (a COCO detector fine-tuned on A2D actors keeps everything else).
CLASS_HEADS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def load_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors naming the file.

    Raises:
        DataError: the file is missing, is not a PyTorch file, is truncated, or holds pickled
            objects other than tensors and plain containers (refused: they could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only names the first forbidden global (a class or function to call).
        found = [line for line in str(exc).splitlines() if "GLOBAL" in line]
        if found:
            raise DataError(path, "refused to load: the file holds pickled Python objects other "
                                  "than tensors and plain containers, which could run code when "
                                  f"unpickled ({found[0].strip()}; torch.load weights_only=True)."
                                  " Re-save only the weights: "
                                  "torch.save(model.state_dict(), path)") from None
        raise DataError(path, "not a PyTorch weights file (unpickling failed)") from None
    except Exception as exc:  # any other failure of torch.load: not a weights file
        raise DataError(path, f"not a PyTorch weights file, or truncated "
                              f"({type(exc).__name__}: {exc})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def state_dict_of(obj: Any, where: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded weights file (bare, or under ``model`` / ``state_dict``)."""
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if _is_state_dict(obj.get(key)):
                return obj[key]
        keys = sorted(map(str, obj))[:8]
        raise DataError(where, f"no state dict found (a dict with keys {keys}; expected tensors, "
                               "or a dict of tensors under 'model' or 'state_dict')")
    raise DataError(where, f"no state dict found (the file holds a {type(obj).__name__})")


def resolve_weights(spec: str) -> tuple[dict[str, torch.Tensor], str]:
    """Load weights given as a local path or a torchvision weights name.

    Returns:
        (state dict, a description for logs and provenance: the path or the weights name).
    """
    if not Path(spec).exists() and "_Weights." in spec:
        import torchvision

        try:
            weights = torchvision.models.get_weight(spec)
        except (ValueError, KeyError) as exc:
            raise DataError(spec, f"not a torchvision weights name ({exc})") from None
        try:
            return weights.get_state_dict(progress=False), spec
        except OSError as exc:  # URLError is an OSError
            raise DataError(spec, f"cannot download torchvision weights ({exc}); without "
                                  "internet, give the path of a local copy instead") from None
    return state_dict_of(load_file(spec), spec), str(spec)


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
    state = {k: v for k, v in state.items() if k not in skipped}
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked")
                     and not (drop_class_heads and k.startswith(CLASS_HEADS)))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                    if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{name} {items[:4]}{' ...' if len(items) > 4 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatch", shapes)) if items]
        raise DataError(where, f"the weights do not fit the {type(module).__name__}: "
                               + "; ".join(parts))
    module.load_state_dict(state, strict=False)
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
    return {"depth": depth, "norm": norm, "num_classes": int(state[key].shape[0]),
            "mask_head_channels": int(head.shape[0]) if head is not None else 256}


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
