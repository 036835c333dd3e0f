"""DeepLab heads: per-pixel class scores from dilated features (the baseline back-end, Fig. 2b).

Two variants, picked by name in :func:`build_aspp_head`:

- ``"v2"`` (default, what Dang et al. call the DeepLab-CNN baseline; Chen et al. 2016, the
  ResNet-101 DeepLab-v2 "ASPP-L" head): one 3x3 conv per atrous rate, straight to class scores,
  and the branches' outputs are summed. No normalisation, very few parameters, works with any
  batch size. Rates (6, 12, 18, 24) at output stride 8.
- ``"v3"``: torchvision's DeepLabV3 head (1x1 branch, three 3x3 atrous branches, image pooling,
  BN, projection to 256, 3x3 conv, 1x1 classifier). Rates (12, 24, 36) at output stride 8.
  Its image-pooling branch has BatchNorm on a 1x1 map, so training needs batch size > 1.

Both keep the spatial size: (B, C, h, w) float32 -> (B, num_classes, h, w) float32 logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

__all__ = ["ASPPV2Head", "ASPPV3Head", "DEFAULT_RATES", "build_aspp_head"]


class ASPPV2Head(nn.Module):
    """DeepLab-v2 ASPP: sum of parallel 3x3 atrous convs, each giving class scores.

    Args:
        in_channels: C of the input features.
        num_classes: K, scores per pixel.
        rates: atrous rates, one branch each.
    """

    def __init__(
        self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)
    ) -> None:
        super().__init__()
        if not rates:
            raise ValueError("rates must name at least one atrous rate")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates
        )
        self.num_classes = num_classes
        for conv in self.branches:
            # DeepLab-v2's initialisation of the classifier (N(0, 0.01), zero bias).
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, num_classes, h, w) logits."""
        return torch.stack([branch(x) for branch in self.branches]).sum(dim=0)


class ASPPV3Head(DeepLabHead):
    """torchvision's DeepLabV3 head, with ``num_classes`` exposed like :class:`ASPPV2Head`."""

    def __init__(
        self, in_channels: int, num_classes: int, rates: Sequence[int] = (12, 24, 36)
    ) -> None:
        super().__init__(in_channels, num_classes, tuple(rates))
        self.num_classes = num_classes


#: variant -> (class, default rates at output stride 8).
_HEADS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "v2": (ASPPV2Head, (6, 12, 18, 24)),
    "v3": (ASPPV3Head, (12, 24, 36)),
}
DEFAULT_RATES: dict[str, tuple[int, ...]] = {k: v[1] for k, v in _HEADS.items()}


def build_aspp_head(
    in_channels: int, num_classes: int, variant: str = "v2", rates: Sequence[int] | None = None
) -> nn.Module:
    """A DeepLab head: ``variant`` "v2" or "v3"; ``rates`` None = the variant's defaults."""
    if variant not in _HEADS:
        raise ValueError(f"unknown ASPP variant {variant!r}; choose one of {sorted(_HEADS)}")
    cls, default_rates = _HEADS[variant]
    return cls(in_channels, num_classes, tuple(rates) if rates is not None else default_rates)
