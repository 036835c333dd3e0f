"""Normalisation layers of the detection backbones (the segmenter and Ji et al.'s model).

``frozen_bn`` (torchvision's default) is only right on top of pretrained weights: without them a
frozen BatchNorm is the identity and the activations of a random ResNet grow layer after layer.
``bn`` trains its statistics on the tiny detection batches; ``gn`` (GroupNorm, Wu & He 2018) does
not depend on the batch and is the from-scratch choice of He et al., "Rethinking ImageNet
pre-training" (2019), who also normalise the FPN and the mask head with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn
from torchvision.ops import misc as misc_nn_ops

#: The normalisation settings of the backbones.
NORMS: tuple[str, ...] = ("frozen_bn", "bn", "gn")


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), fewer for a channel count 32 does not divide
    (a narrow head)."""
    return nn.GroupNorm(math.gcd(32, num_channels), num_channels)


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """The backbone normalisation layer factory for ``norm`` (one of :data:`NORMS`)."""
    if norm == "frozen_bn":
        return misc_nn_ops.FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return group_norm
    raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")


def head_norm_layer(norm: str) -> Callable[[int], nn.Module] | None:
    """Normalisation of the FPN and mask head: GroupNorm with ``gn``, none otherwise (as
    torchvision's Mask R-CNN v1, whose pretrained files have none there)."""
    return group_norm if norm == "gn" else None
