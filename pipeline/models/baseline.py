"""The DeepLab-type baseline of Dang et al. (Fig. 2b): front-end + two per-pixel heads.

Also the first training stage of the paper (section 3.4): the front-end is trained with this
light back-end, then frozen, and its features are cached for the region back-end.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch import Tensor, nn

from pipeline.a2d.classes import NUM_ACTIONS, NUM_ACTORS
from pipeline.models.aspp import DEFAULT_RATES, build_aspp_head
from pipeline.models.frontend import IMAGENET_MEAN, IMAGENET_STD, build_frontend

__all__ = ["BaselineSegmenter", "build_baseline"]


class BaselineSegmenter(nn.Module):
    """Front-end features -> actor and action logits per pixel, at the features' stride.

    Args:
        frontend: module ``(rgb, flow | None) -> (B, C, h, w)`` exposing ``out_channels`` and
            ``stride`` (:class:`pipeline.models.frontend.TwoStreamFrontend`).
        actor_head: module (B, C, h, w) -> (B, 1 + NUM_ACTORS, h, w) (background first).
        action_head: module (B, C, h, w) -> (B, 1 + NUM_ACTIONS, h, w) (background first).

    Logits are returned at stride ``frontend.stride`` (8 or 16): the loss resizes them to the labels
    (``pipeline.models.losses``) and post-processing to the clip (``pipeline.models.joint``).
    """

    def __init__(self, frontend: nn.Module, actor_head: nn.Module, action_head: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.actor_head = actor_head
        self.action_head = action_head
        self.stride: int = frontend.stride

    def forward(self, rgb: Tensor, flow: Tensor | None = None) -> dict[str, Tensor]:
        """Args:
            rgb: (B, 3, H, W) float32 in [0, 1].
            flow: (B, 3, H, W) float32 flow image, or None for an RGB-only front-end.

        Returns:
            ``{"actor": (B, 8, h, w), "action": (B, 10, h, w)}`` float32 logits,
            ``h, w = ceil(H/8), ceil(W/8)``. A feature cache stores ``self.frontend(rgb, flow)``
            and later calls :meth:`heads_forward` on it.
        """
        return self.heads_forward(self.frontend(rgb, flow))

    def heads_forward(self, features: Tensor) -> dict[str, Tensor]:
        """The back-end alone, on (cached) fused features (B, C, h, w) float32.

        Returns ``{"actor": (B, 8, h, w), "action": (B, 10, h, w)}`` logits.
        """
        return {"actor": self.actor_head(features), "action": self.action_head(features)}


def build_baseline(
    depth: int = 101,
    two_stream: bool = True,
    weights: str | os.PathLike | None = None,
    flow_init: str = "rgb",
    reduce_to: int | None = None,
    aspp: str = "v2",
    rates: Sequence[int] | None = None,
    flow_mean: tuple[float, float, float] = IMAGENET_MEAN,
    flow_std: tuple[float, float, float] = IMAGENET_STD,
    output_stride: int = 8,
) -> BaselineSegmenter:
    """The baseline: :func:`~pipeline.models.frontend.build_frontend` (same arguments) plus two
    ASPP heads (``aspp`` "v2" or "v3") with 8 and 10 classes. ``rates`` None = the variant's
    defaults at output stride 8, scaled by ``8 / output_stride`` (DeepLab-v3 halves them at 16)."""
    frontend = build_frontend(
        depth=depth, two_stream=two_stream, weights=weights, flow_init=flow_init,
        reduce_to=reduce_to, flow_mean=flow_mean, flow_std=flow_std, output_stride=output_stride,
    )
    if rates is None:
        rates = [max(1, r * 8 // output_stride) for r in DEFAULT_RATES[aspp]] \
            if aspp in DEFAULT_RATES else None
    return BaselineSegmenter(
        frontend,
        actor_head=build_aspp_head(frontend.out_channels, 1 + NUM_ACTORS, aspp, rates),
        action_head=build_aspp_head(frontend.out_channels, 1 + NUM_ACTIONS, aspp, rates),
    )
