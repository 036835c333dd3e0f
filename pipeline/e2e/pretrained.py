"""Ji et al.'s initialisation (section 4): the appearance stream from a Mask R-CNN, the motion
stream from an ImageNet ResNet, the temporal layers and the action head fresh.

Sources are torchvision-format state dicts (read by :func:`pipeline.checkpoint.resolve`: a local
file or a torchvision weights name):

- appearance (``e2e_model.weights``): a torchvision Mask R-CNN ResNet-FPN
  (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``, the pipeline's own segmenter ``model.pt``, or any
  file with torchvision's key names). ``backbone.body.*`` -> ``appearance.body.*``,
  ``backbone.fpn.*`` -> ``appearance.fpn.*``; ``rpn.*`` and ``roi_heads.{box,mask}_*`` keep their
  names. A plain ImageNet ResNet (``conv1.weight``, ``layer1.*``) initialises the appearance
  backbone only.
- motion (``e2e_model.motion_weights``): an ImageNet ResNet (``conv1.*``, ``layer*.*``; ``fc.*``
  unused) -> ``motion.body.*``, or the backbone of a Mask R-CNN file.

A head tensor whose shape differs (the class-count heads: 91 COCO classes vs bg + 7 actors), or
a tensor the file lacks (e.g. BatchNorm statistics of a GroupNorm segmenter), keeps its fresh
init and is reported as re-initialised. A part that was asked to load (the file has keys for it)
and loads nothing is an error, and so is a backbone, FPN or RPN tensor of another shape: the file
is for another depth or width.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torchvision
from torch import Tensor, nn

from pipeline import checkpoint
from pipeline.errors import DataError

__all__ = ["PARTS", "InitReport", "appearance_state", "motion_state", "initialise"]

log = logging.getLogger("pipeline.e2e.pretrained")

#: Report part -> our parameter-name prefix.
PARTS: dict[str, str] = {
    "appearance backbone": "appearance.body.",
    "appearance fpn": "appearance.fpn.",
    "rpn": "rpn.",
    "box head": "roi_heads.box_",
    "mask head": "roi_heads.mask_",
    "motion backbone": "motion.body.",
}
#: Parts whose class-dependent tensors may differ in shape (re-initialised); in the other parts
#: a tensor of another shape means another depth or width: an error.
_HEADS = ("box head", "mask head")
_TORCHVISION_PREFIXES = {"backbone.body.": "appearance.body.", "backbone.fpn.": "appearance.fpn.",
                         "rpn.": "rpn.", "roi_heads.box_": "roi_heads.box_",
                         "roi_heads.mask_": "roi_heads.mask_"}
_RESNET_KEYS = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
# Names of torchvision's released COCO files (state-dict version 1), which torchvision itself
# renames on load (RPNHead, FeaturePyramidNetwork, MaskRCNNHeads ``_load_from_state_dict``).
_LEGACY = ((re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
           (re.compile(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)$"),
            r"backbone.fpn.\1_blocks.\2.0.\3"))
_LEGACY_MASK = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$")


@dataclass
class InitReport:
    """What the initialisation loaded, per part (plain values: it goes into provenance)."""

    sources: dict[str, str] = field(default_factory=dict)  # "appearance"/"motion" -> source
    loaded: dict[str, int] = field(default_factory=dict)  # part -> tensors loaded
    total: dict[str, int] = field(default_factory=dict)  # part -> tensors of the part
    reinitialised: list[str] = field(default_factory=list)  # "key (reason)"
    unused: int = 0  # tensors of the files that fit nothing of this model

    def as_meta(self) -> dict[str, Any]:
        return {"sources": dict(self.sources), "loaded": dict(self.loaded),
                "total": dict(self.total), "reinitialised": list(self.reinitialised),
                "unused": self.unused}

    def summary(self) -> str:
        parts = ", ".join(f"{p} {self.loaded[p]}/{self.total[p]}" for p in self.loaded)
        return (f"initialised from {self.sources}: {parts}; re-initialised "
                f"{len(self.reinitialised)} {self.reinitialised[:6]}"
                f"{' ...' if len(self.reinitialised) > 6 else ''}; {self.unused} unused")


def _is_resnet(state: dict[str, Tensor]) -> bool:
    return any(k.startswith(_RESNET_KEYS) for k in state)


def _upgrade(key: str) -> str:
    for pattern, repl in _LEGACY:
        key = pattern.sub(repl, key)
    found = _LEGACY_MASK.match(key)
    if found:
        key = f"roi_heads.mask_head.{int(found.group(1)) - 1}.0.{found.group(2)}"
    return key


def appearance_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision Mask R-CNN (or plain ResNet) state dict under our appearance names."""
    if not any(k.startswith("backbone.body.") for k in state) and _is_resnet(state):
        return {f"appearance.body.{k}": v for k, v in state.items() if k.startswith(_RESNET_KEYS)}
    out = {}
    for k, v in state.items():
        k = _upgrade(k)
        for theirs, ours in _TORCHVISION_PREFIXES.items():
            if k.startswith(theirs):
                out[ours + k[len(theirs):]] = v
    return out


def motion_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An ImageNet ResNet (or the backbone of a Mask R-CNN) under our motion names."""
    if any(k.startswith("backbone.body.") for k in state):
        n = len("backbone.body.")
        return {f"motion.body.{k[n:]}": v for k, v in state.items()
                if k.startswith("backbone.body.")}
    return {f"motion.body.{k}": v for k, v in state.items() if k.startswith(_RESNET_KEYS)}


def _load(model: nn.Module, mapped: dict[str, Tensor], n_file: int, source: str,
          parts: list[str], report: InitReport) -> None:
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    fits = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
    for part in parts:
        prefix = PARTS[part]
        keys = [k for k in own if k.startswith(prefix)]
        if not keys:
            continue  # this variant has no such part (e.g. no mask head)
        asked = [k for k in mapped if k.startswith(prefix)]
        if not asked:
            continue  # the file has nothing for it (e.g. an ImageNet ResNet: backbone only)
        n = sum(k in fits for k in keys)
        misfit = [k for k in asked if k not in fits and not k.endswith("num_batches_tracked")]
        if n == 0 or (part not in _HEADS and misfit):
            k = misfit[0] if misfit else asked[0]
            have = tuple(own[k].shape) if k in own else "absent"
            what = "none of its" if n == 0 else f"{len(misfit)} of the file's"
            raise DataError(source, f"{part}: {what} {len(keys)} tensors fit this model "
                                    f"(e.g. {k} {tuple(mapped[k].shape)} vs {have}): the file "
                                    "is for another depth, width or norm (e2e_model.depth, "
                                    "fpn_channels, representation_size, norm)")
        report.loaded[part], report.total[part] = n, len(keys)
        for k in keys:
            if k not in fits:
                why = "shape" if k in mapped else "not in file"
                report.reinitialised.append(f"{k} ({why})")
    report.unused += n_file - len(fits) - sum(k.endswith("num_batches_tracked") for k in mapped)
    model.load_state_dict(fits, strict=False)


def initialise(model: nn.Module, weights: str | None, motion_weights: str | None,
               depth: int) -> InitReport:
    """Load ``weights`` into the appearance stream and ``motion_weights`` into the motion
    stream of ``model`` (an :class:`~pipeline.e2e.model.ActorActionRCNN`), in place.

    Args:
        weights: Mask R-CNN (or ResNet) file or torchvision name, or None.
        motion_weights: ResNet file or torchvision name (bare names of ``ResNet{depth}_Weights``
            accepted), or None. Ignored, with a log line, by variants without motion stream.
        depth: the model's ResNet depth (for bare torchvision names).

    Returns:
        The report (also logged).

    Raises:
        DataError: an unreadable file, an unknown name, no tensor of the file fits, or a part
            the file has keys for loads nothing.
    """
    report = InitReport()
    appearance_parts = [p for p in PARTS if p != "motion backbone"]
    if weights:
        state, source = checkpoint.resolve(weights, what="e2e_model.weights file")
        mapped = appearance_state(state)
        if not mapped:
            raise DataError(source, "e2e_model.weights: neither a torchvision Mask R-CNN "
                                    "(backbone.body.*, rpn.*, roi_heads.*) nor a ResNet state "
                                    "dict (conv1.*, layer1.*)")
        report.sources["appearance"] = source
        _load(model, mapped, len(state), source, appearance_parts, report)
    if motion_weights:
        if getattr(model, "motion", None) is None:
            log.info("e2e_model.motion_weights unused: this variant has no motion stream")
        else:
            enum = torchvision.models.get_model_weights(f"resnet{depth}")
            state, source = checkpoint.resolve(motion_weights, enum=enum,
                                               what="e2e_model.motion_weights file")
            mapped = motion_state(state)
            if not mapped:
                raise DataError(source, "e2e_model.motion_weights: not a ResNet state dict "
                                        "(conv1.*, layer1.*) nor a Mask R-CNN backbone")
            report.sources["motion"] = source
            _load(model, mapped, len(state), source, ["motion backbone"], report)
    if report.sources:
        log.info("%s", report.summary())
    return report

