"""The region back-end of Dang et al. (Fig. 2c, section 3.3).

Per task (actor, action) one :class:`RegionHead` of identical structure: pool the fused
front-end features inside each region's box, classify the region with FC layers (Faster R-CNN
style), then spread the region scores to pixels with the region-to-pixel layer
(:mod:`pipeline.models.region_to_pixel`).

Regions of an image are given as boxes (N, 4) float32, ``(x1, y1, x2, y2)`` in image pixels
(far corner exclusive), and full-frame masks (N, H, W) float32 probabilities in [0, 1] at image
resolution, as stored by the ``masks`` stage (divide its uint8 by 255).

Design choices:

- Context region: Dang et al. are silent on pixels that no region mask covers. Every image
  gets one extra region, the whole-frame box, scored by the same pooling + FC layers, so every
  pixel is labelled (background, by learning) and a frame with no detection still gets a
  prediction. Its mask is, by ``context_region``:

  - ``"complement"`` (default): ``1 - max_i m_ij``, the part of the frame no region covers. A
    pixel inside a region mask is labelled by the regions only, which is the paper's
    region-to-pixel layer; the context region fills the rest. With GT masks the context
    region never competes inside an actor.
  - ``"frame"``: 1 everywhere. The context competes with the regions in the max of Eq. 2 at
    every pixel; since most pixels are background its background score grows, and a region
    must out-score it to label its own pixels. Measured on the synthetic default this
    collapses to background everywhere within the embedded training budget (README).
  - ``"none"``: no context region; uncovered pixels get all-zero logits (uniform softmax).
- Pooling: ``"align"`` (``torchvision.ops.roi_align``, ``aligned=True``: boxes in continuous
  pixel coordinates, detectron2 convention) or ``"pool"`` (``roi_pool``, Fast R-CNN's max
  pooling, what the paper names). ``mask_pooling=True`` adds "free-form" pooling (Caesar et
  al. 2016): each pooled bin is multiplied by the mean mask value in that bin (``roi_align`` of
  the mask at image resolution), so features outside the mask are suppressed. This is the
  product of the bin averages, an approximation of the average of the products that avoids
  an (N, C, h, w) masked copy of the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from pipeline.a2d.classes import NUM_ACTIONS, NUM_ACTORS
from pipeline.models.region_to_pixel import region_to_pixel

__all__ = ["CONTEXT_MODES", "RegionHead", "RegionSegmenter", "Regions", "build_region_segmenter",
           "context_mask", "resize_masks"]

POOLINGS = ("align", "pool")
CONTEXT_MODES = ("complement", "frame", "none")


class Regions(NamedTuple):
    """The candidate regions of one image (a plain ``(boxes, masks)`` tuple works too).

    boxes: (N, 4) float32, ``(x1, y1, x2, y2)`` image pixels. masks: (N, H, W) float in [0, 1].
    """

    boxes: Tensor
    masks: Tensor


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, H, W) float masks -> (N, *size), bilinear (antialiased when shrinking)."""
    if tuple(masks.shape[1:]) == tuple(size):
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    shrink = size[0] < masks.shape[1] or size[1] < masks.shape[2]
    out = F.interpolate(
        masks[:, None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )
    return out[:, 0].clamp_(0.0, 1.0)  # antialiasing filters overshoot slightly


def context_mask(masks: Tensor, mode: str) -> Tensor:
    """(N, H, W) region masks -> (1, H, W) mask of the context region (module docstring).

    ``"complement"`` is ``1 - max_i m_ij`` (all ones when N = 0); ``"frame"`` is all ones.
    """
    if mode == "frame" or masks.shape[0] == 0:
        return masks.new_ones((1, *masks.shape[1:]))
    if mode == "complement":
        return 1.0 - masks.amax(dim=0, keepdim=True)
    raise ValueError(f"no context mask for mode {mode!r}; choose one of {CONTEXT_MODES[:2]}")


class RegionHead(nn.Module):
    """Region pooling + FC layers -> region scores -> region-to-pixel -> pixel logits.

    Args:
        in_channels: C of the fused features.
        num_classes: K (8 for actors, 10 for actions; background first).
        pool_size: pooled grid (pool_size x pool_size bins per region).
        pooling: "align" (roi_align) or "pool" (roi_pool).
        mask_pooling: weight pooled bins by the region's mask ("free-form" pooling).
        hidden_dim: width of the hidden FC layers.
        num_fc: number of hidden FC layers (each Linear + ReLU [+ Dropout]) before the classifier.
        dropout: dropout after each hidden FC layer (0 = none).
        context_region: mask of the extra whole-frame region, one of :data:`CONTEXT_MODES`
            (module docstring); ``"none"`` adds no region.
        sampling_ratio: roi_align samples per bin side (ignored by roi_pool).
        mask_threshold: passed to :func:`~pipeline.models.region_to_pixel.region_to_pixel`.
        binarize: None keeps the masks' probabilities (Eq. 2's ``m_ij``); a threshold t makes
            every region mask ``m_ij >= t`` (0/1) before pooling, the context mask and Eq. 2,
            as instance segmenters' masks are used downstream (Mask R-CNN, FCIS: t = 0.5).
            A soft mask of probability 0.4 otherwise lets the context region (mask 0.6 there)
            compete with the region on its own pixels.

    The FC layers dominate the parameter count: ``in_channels * pool_size**2 * hidden_dim``
    (4096 * 49 * 1024 = 205 M for two ResNet-101 streams): reduce the front-end channels
    (``reduce_to``) or the pool size where memory matters.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        pool_size: int = 7,
        pooling: str = "align",
        mask_pooling: bool = False,
        hidden_dim: int = 1024,
        num_fc: int = 2,
        dropout: float = 0.0,
        context_region: str = "complement",
        sampling_ratio: int = 2,
        mask_threshold: float = 0.0,
        binarize: float | None = None,
    ) -> None:
        super().__init__()
        if binarize is not None and not 0.0 < binarize <= 1.0:
            raise ValueError(f"binarize must be None or a threshold in (0, 1], got {binarize}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if context_region not in CONTEXT_MODES:
            raise ValueError(f"unknown context_region {context_region!r}; "
                             f"choose one of {CONTEXT_MODES}")
        self.num_classes = num_classes
        self.pool_size = pool_size
        self.pooling = pooling
        self.mask_pooling = mask_pooling
        self.context_region = context_region
        self.sampling_ratio = sampling_ratio
        self.mask_threshold = mask_threshold
        self.binarize = binarize
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * pool_size * pool_size
        for _ in range(num_fc):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_dim
        self.fc = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        # Faster R-CNN's classifier initialisation: near-uniform scores at the start.
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def _with_context(self, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        if self.context_region == "none":
            return boxes
        h, w = image_size
        frame = boxes.new_tensor([[0.0, 0.0, float(w), float(h)]])
        return torch.cat([boxes, frame])

    def _masks(self, masks: Tensor, dtype: torch.dtype) -> Tensor:
        """Region masks as used by this head: probabilities, or 0/1 when ``binarize`` is set."""
        masks = masks.to(dtype)
        return masks if self.binarize is None else (masks >= self.binarize).to(dtype)

    def region_scores(
        self,
        features: Tensor,
        regions: Sequence[tuple[Tensor, Tensor]],
        image_size: tuple[int, int],
        spatial_scale: float = 1 / 8,
    ) -> list[Tensor]:
        """Scores of every region of every image.

        Args:
            features: (B, C, h, w) float32 fused features.
            regions: B (boxes (N_i, 4), masks (N_i, H, W)) pairs, image pixels.
            image_size: (H, W) of the images the boxes refer to.
            spatial_scale: feature pixels per image pixel (1 / front-end stride).

        Returns:
            B tensors (N_i [+ 1], K) of logits; the context region, if on, is the last row.
        """
        if len(regions) != features.shape[0]:
            raise ValueError(f"{len(regions)} region sets for a batch of {features.shape[0]}")
        boxes = [self._with_context(b.to(features.dtype), image_size) for b, _ in regions]
        if self.pooling == "align":
            pooled = roi_align(
                features, boxes, self.pool_size, spatial_scale, self.sampling_ratio, aligned=True
            )
        else:
            pooled = roi_pool(features, boxes, self.pool_size, spatial_scale)
        if self.mask_pooling:
            pooled = pooled * self._mask_bins(regions, boxes, image_size, features.dtype)
        scores = self.classifier(self.fc(pooled))  # (sum N_i, K)
        return list(scores.split([len(b) for b in boxes]))

    def _mask_bins(
        self,
        regions: Sequence[tuple[Tensor, Tensor]],
        boxes: list[Tensor],
        image_size: tuple[int, int],
        dtype: torch.dtype,
    ) -> Tensor:
        """(sum N_i, 1, S, S) mean mask value per pooling bin (1 for the context region)."""
        bins = []
        for (_, masks), image_boxes in zip(regions, boxes):
            n = masks.shape[0]
            # roi_align over a "batch" of N one-channel masks: region i reads its own mask.
            rois = torch.cat([torch.arange(n, dtype=dtype, device=masks.device)[:, None],
                              image_boxes[:n]], dim=1)
            bins.append(roi_align(self._masks(masks, dtype)[:, None], rois, self.pool_size, 1.0,
                                  self.sampling_ratio, aligned=True))
            # Context region: pooled over the whole frame in both modes (its features are
            # the frame's context; its mask decides only which pixels it may label).
            if len(image_boxes) > n:
                bins.append(masks.new_ones((1, 1, self.pool_size, self.pool_size), dtype=dtype))
        return torch.cat(bins)

    def forward(
        self,
        features: Tensor,
        regions: Sequence[tuple[Tensor, Tensor]],
        image_size: tuple[int, int],
        spatial_scale: float = 1 / 8,
        output_size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Pixel logits (B, K, *output_size) float32; ``output_size`` None = ``image_size``.

        Masks are resized to ``output_size`` (e.g. the feature size to train at stride 8);
        arguments as in :meth:`region_scores`.
        """
        for boxes, masks in regions:
            if boxes.ndim != 2 or boxes.shape[1] != 4 or masks.shape != (len(boxes), *image_size):
                raise ValueError(
                    f"expected boxes (N, 4) and masks (N, {image_size[0]}, {image_size[1]}), got "
                    f"{tuple(boxes.shape)} and {tuple(masks.shape)}"
                )
        size = tuple(image_size) if output_size is None else tuple(output_size)
        scores = self.region_scores(features, regions, image_size, spatial_scale)
        pixels = []
        for (_, masks), image_scores in zip(regions, scores):
            masks = self._masks(resize_masks(masks.to(features.dtype), size), features.dtype)
            if self.context_region != "none":
                masks = torch.cat([masks, context_mask(masks, self.context_region)])
            pixels.append(region_to_pixel(image_scores, masks, mask_threshold=self.mask_threshold))
        return torch.stack(pixels)


class RegionSegmenter(nn.Module):
    """Two region heads of identical structure, on cached or live fused features.

    Args:
        actor_head: :class:`RegionHead` with 1 + NUM_ACTORS classes.
        action_head: :class:`RegionHead` with 1 + NUM_ACTIONS classes.
    """

    def __init__(self, actor_head: RegionHead, action_head: RegionHead) -> None:
        super().__init__()
        self.actor_head = actor_head
        self.action_head = action_head

    def forward(
        self,
        features: Tensor,
        regions: Sequence[tuple[Tensor, Tensor]],
        image_size: tuple[int, int],
        spatial_scale: float = 1 / 8,
        output_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        """Args:
            features: (B, 2C, h, w) float32 fused front-end features.
            regions: B pairs (boxes (N_i, 4) float32 image pixels, masks (N_i, H, W) float32).
            image_size: (H, W) of the frames.
            spatial_scale: 1 / front-end stride.
            output_size: (H', W') of the returned logits; None = ``image_size``.

        Returns:
            ``{"actor": (B, 8, H', W'), "action": (B, 10, H', W')}`` float32 logits.
        """
        args = (features, regions, image_size, spatial_scale, output_size)
        return {"actor": self.actor_head(*args), "action": self.action_head(*args)}


def build_region_segmenter(
    in_channels: int,
    pool_size: int = 7,
    pooling: str = "align",
    mask_pooling: bool = False,
    hidden_dim: int = 1024,
    num_fc: int = 2,
    dropout: float = 0.0,
    context_region: str = "complement",
    mask_threshold: float = 0.0,
    binarize: float | None = None,
) -> RegionSegmenter:
    """The region back-end on ``in_channels`` fused features (``frontend.out_channels``);
    arguments as in :class:`RegionHead`, shared by the actor and action heads."""
    def head(num_classes: int) -> RegionHead:
        return RegionHead(
            in_channels, num_classes, pool_size=pool_size, pooling=pooling,
            mask_pooling=mask_pooling, hidden_dim=hidden_dim, num_fc=num_fc, dropout=dropout,
            context_region=context_region, mask_threshold=mask_threshold, binarize=binarize,
        )

    return RegionSegmenter(head(1 + NUM_ACTORS), head(1 + NUM_ACTIONS))
