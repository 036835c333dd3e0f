"""Pyramid backbones (ResNet + FPN) and the 3x1x1 temporal aggregation of Ji et al. 2018.

Section 3.1: a ResNet + FPN gives feature maps at strides 4, 8, 16, 32 (``"0"`` .. ``"3"``).
As in Mask R-CNN (He et al. 2017) and its COCO weights, the appearance pyramid also carries the
parameter-free ``"pool"`` level (stride 64, max-pooled ``"3"``), which only the RPN reads for its
largest anchors; RoIAlign and the temporal layers use the four levels of the paper.

Section 3.2: "3 x 1 x 1 conv layers are applied to feature maps of every spatial scale", one
set per stream, on top of the pyramids ("top-heavy", Xie et al. 2018).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from pipeline.models.norms import head_norm_layer, norm_layer

__all__ = [
    "PYRAMID_LEVELS", "RESNETS", "build_pyramid_backbone", "TemporalAggregation", "centre_frame",
    "unflatten_time", "fuse_streams",
]

#: The four pyramid levels of the paper (strides 4, 8, 16, 32), as torchvision names them.
PYRAMID_LEVELS: tuple[str, ...] = ("0", "1", "2", "3")

#: depth -> torchvision ResNet constructor.
RESNETS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}


class _NoExtraLevel(ExtraFPNBlock):
    """Keeps the FPN at exactly the four levels (the motion stream has no RPN to feed)."""

    def forward(self, results, x, names):  # noqa: D102 - signature fixed by ExtraFPNBlock
        return results, names


def build_pyramid_backbone(
    depth: int, *, pool_level: bool, trainable_layers: int = 5, norm: str = "frozen_bn",
    channels: int = 256,
) -> BackboneWithFPN:
    """ResNet-``depth`` + FPN with ``channels`` (Mask R-CNN: 256) per level, random weights.

    Args:
        depth: 18, 34, 50 or 101.
        pool_level: add Mask R-CNN's ``"pool"`` level (for an RPN).
        trainable_layers: ResNet stages left trainable, counted from the top (5 = all), as in
            torchvision (fine-tuning from COCO/ImageNet weights usually uses 3).
        norm: ``frozen_bn``, ``bn`` or ``gn`` (:mod:`pipeline.models.norms`; ``gn`` also
            normalises the FPN). FrozenBatchNorm2d is standard for detection with few images
            per GPU and
            pretrained statistics) or BatchNorm2d (training from scratch).
        channels: FPN width; fewer than 256 only to make small CPU runs affordable.

    Returns:
        A module mapping (N, 3, H, W) to an OrderedDict of (N, C, H/s, W/s) for s = 4..32
        (and 64 for ``"pool"``), with ``out_channels = C = channels``.
    """
    if depth not in RESNETS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNETS)}, got {depth}")
    body = RESNETS[depth](weights=None, norm_layer=norm_layer(norm))
    extra = LastLevelMaxPool() if pool_level else _NoExtraLevel()
    fpn_norm = head_norm_layer(norm)
    if channels == 256:
        return _resnet_fpn_extractor(body, trainable_layers, extra_blocks=extra,
                                     norm_layer=fpn_norm)
    # torchvision's extractor fixes 256 channels: freeze the same stages, then build the FPN
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be 0..5, got {trainable_layers}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        if not name.startswith(tuple(train)):
            p.requires_grad_(False)
    in_stage2 = body.inplanes // 8
    return BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
                           [in_stage2 * 2 ** (k - 1) for k in (1, 2, 3, 4)], channels,
                           extra_blocks=extra, norm_layer=fpn_norm)


class TemporalAggregation(nn.Module):
    """Per-level stacks of 3x1x1 convolutions that fold a T-frame pyramid into one frame.

    Each level gets ``(T - 1) / 2`` Conv3d layers of kernel (3, 1, 1) without temporal padding
    (ReLU between them), so T frames shrink to one whose temporal receptive field is exactly the
    T-frame context window centred on the annotated frame; T = 3 is a single 3x1x1 layer, the
    paper's setting. Weights are randomly initialised, as in the paper (section 4).

    Args:
        channels: channels of every pyramid level.
        num_frames: T, odd, >= 3.
        levels: pyramid level names to aggregate.
    """

    def __init__(self, channels: int, num_frames: int, levels: tuple[str, ...] = PYRAMID_LEVELS) -> None:
        super().__init__()
        if num_frames < 3 or num_frames % 2 == 0:
            raise ValueError(f"temporal aggregation needs an odd number of frames >= 3, got {num_frames}")
        self.num_frames = num_frames
        self.levels = levels
        depth = (num_frames - 1) // 2
        self.convs = nn.ModuleDict()
        for level in levels:
            layers: list[nn.Module] = []
            for i in range(depth):
                if i:
                    layers.append(nn.ReLU(inplace=True))
                layers.append(nn.Conv3d(channels, channels, kernel_size=(3, 1, 1)))
            self.convs[level] = nn.Sequential(*layers)

    def forward(self, features: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
        """(B, T, C, h, w) per level -> (B, C, h, w) per level (the levels in ``self.levels``)."""
        out = OrderedDict()
        for level in self.levels:
            x = features[level]
            if x.shape[1] != self.num_frames:
                raise ValueError(f"expected {self.num_frames} frames, got {x.shape[1]}")
            x = self.convs[level](x.transpose(1, 2))  # (B, C, T, h, w) -> (B, C, 1, h, w)
            out[level] = x[:, :, 0]
        return out


def centre_frame(features: dict[str, Tensor], levels: tuple[str, ...] = PYRAMID_LEVELS) -> OrderedDict[str, Tensor]:
    """(B, T, C, h, w) per level -> the centre frame's (B, C, h, w) (the no-temporal ablation)."""
    return OrderedDict((k, features[k][:, features[k].shape[1] // 2]) for k in levels)


def unflatten_time(features: dict[str, Tensor], batch: int) -> OrderedDict[str, Tensor]:
    """(B * T, C, h, w) per level -> (B, T, C, h, w) per level."""
    return OrderedDict((k, v.unflatten(0, (batch, -1))) for k, v in features.items())


def fuse_streams(*pyramids: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Mid-level fusion (section 3.2): concatenate the streams' pyramids level by level."""
    return OrderedDict((k, torch.cat([p[k] for p in pyramids], dim=1)) for k in pyramids[0])
