"""Pyramid backbones (ResNet + FPN) and the 3x1x1 temporal aggregation of Ji et al. 2018.

Section 3.1: a ResNet + FPN (:mod:`pipeline.models.pyramid`, shared with the segmenter) gives feature maps at strides 4, 8, 16, 32 (``"0"`` .. ``"3"``).
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

__all__ = [
    "PYRAMID_LEVELS", "TEMPORAL_INITS", "TemporalAggregation", "centre_frame", "unflatten_time",
    "fuse_streams",
]

#: The four pyramid levels of the paper (strides 4, 8, 16, 32), as torchvision names them.
PYRAMID_LEVELS: tuple[str, ...] = ("0", "1", "2", "3")
#: Initialisations of the temporal layers (see :class:`TemporalAggregation`).
TEMPORAL_INITS: tuple[str, ...] = ("random", "centre")


class TemporalAggregation(nn.Module):
    """Per-level stacks of 3x1x1 convolutions that fold a T-frame pyramid into one frame.

    Each level gets ``(T - 1) / 2`` Conv3d layers of kernel (3, 1, 1) without temporal padding
    (ReLU between them), so T frames shrink to one whose temporal receptive field is exactly the
    T-frame context window centred on the annotated frame; T = 3 is a single 3x1x1 layer, the
    paper's setting.

    Args:
        channels: channels of every pyramid level.
        num_frames: T, odd, >= 3.
        levels: pyramid level names to aggregate.
        init: ``"random"``: PyTorch's default Conv3d init, as in the paper (section 4: "randomly
            initialized"). ``"centre"``: each layer starts as the identity on its centre frame
            (zero side taps and bias; I3D-style inflation), so a model whose pyramids come from
            a trained detector starts with the single-frame features and learns the context.
    """

    def __init__(self, channels: int, num_frames: int, levels: tuple[str, ...] = PYRAMID_LEVELS,
                 init: str = "random") -> None:
        super().__init__()
        if num_frames < 3 or num_frames % 2 == 0:
            raise ValueError(f"temporal aggregation needs an odd number of frames >= 3, got {num_frames}")
        if init not in TEMPORAL_INITS:
            raise ValueError(f"temporal init must be one of {TEMPORAL_INITS}, got {init!r}")
        self.num_frames = num_frames
        self.levels = levels
        depth = (num_frames - 1) // 2
        self.convs = nn.ModuleDict()
        for level in levels:
            layers: list[nn.Module] = []
            for i in range(depth):
                if i:
                    layers.append(nn.ReLU(inplace=True))
                conv = nn.Conv3d(channels, channels, kernel_size=(3, 1, 1))
                if init == "centre":
                    _centre_identity_(conv)
                layers.append(conv)
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


@torch.no_grad()
def _centre_identity_(conv: nn.Conv3d) -> None:
    conv.weight.zero_()
    conv.weight[:, :, 1, 0, 0] = torch.eye(conv.out_channels, conv.in_channels)
    conv.bias.zero_()


def centre_frame(features: dict[str, Tensor], levels: tuple[str, ...] = PYRAMID_LEVELS) -> OrderedDict[str, Tensor]:
    """(B, T, C, h, w) per level -> the centre frame's (B, C, h, w) (the no-temporal ablation)."""
    return OrderedDict((k, features[k][:, features[k].shape[1] // 2]) for k in levels)


def unflatten_time(features: dict[str, Tensor], batch: int) -> OrderedDict[str, Tensor]:
    """(B * T, C, h, w) per level -> (B, T, C, h, w) per level."""
    return OrderedDict((k, v.unflatten(0, (batch, -1))) for k, v in features.items())


def fuse_streams(*pyramids: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Mid-level fusion (section 3.2): concatenate the streams' pyramids level by level."""
    return OrderedDict((k, torch.cat([p[k] for p in pyramids], dim=1)) for k in pyramids[0])
