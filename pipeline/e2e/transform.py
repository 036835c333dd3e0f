"""Clip-level input transform: normalise, resize and pad RGB clips, flow clips and targets alike.

Built on torchvision's :class:`GeneralizedRCNNTransform` (its resize rule, multi-scale training
choice of ``min_size``, padding to a multiple of 32 and the mapping of detections back to the
input size), applied to a whole clip at once so that every frame and every flow field of a clip
gets exactly the same geometry as the annotated centre frame and its targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

__all__ = ["ClipBatch", "ClipTransform"]


@dataclass
class ClipBatch:
    """A transformed batch.

    Attributes:
        rgb: (B, T, 3, Hp, Wp) float32, normalised, zero-padded to a multiple of 32.
        flow: (B, T, 3, Hp, Wp) float32 or None.
        image_sizes: per clip (h, w) after resizing, before padding.
        original_sizes: per clip (H, W) as given.
        targets: the centre-frame targets resized like the frames, or None.
    """

    rgb: Tensor
    flow: Tensor | None
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    targets: list[dict[str, Tensor]] | None


class ClipTransform(nn.Module):
    """Normalise, resize (shorter side to ``min_size``, longer side at most ``max_size``) and pad.

    Flow is divided by ``flow_std``; after resizing, its x and y channels are multiplied by the
    horizontal and vertical scale factors (flow is measured in pixels of the frame) and the
    magnitude channel is recomputed from them, so it stays ``|(x, y)|`` exactly.
    """

    def __init__(
        self,
        *,
        min_size: int | tuple[int, ...],
        max_size: int,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        flow_std: float = 1.0,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        self.rcnn = GeneralizedRCNNTransform(
            min_size, max_size, list(image_mean), list(image_std), size_divisible=size_divisible
        )
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.flow_std = float(flow_std)

    def forward(
        self,
        images: Tensor | list[Tensor],
        flows: Tensor | list[Tensor] | None = None,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> ClipBatch:
        """Args:
            images: (B, T, 3, H, W) float RGB in 0..1, or a list of B (T, 3, H_i, W_i).
            flows: like ``images`` with (x, y, magnitude) channels, or None.
            targets: B dicts for the centre frames (``boxes`` and ``masks`` are resized), or None.
        """
        clips = list(images)
        flow_clips = list(flows) if flows is not None else None
        if flow_clips is not None and len(flow_clips) != len(clips):
            raise ValueError(f"{len(flow_clips)} flow clips for {len(clips)} image clips")
        new_targets = [dict(t) for t in targets] if targets is not None else None
        stacked, original_sizes = [], []
        for i, clip in enumerate(clips):
            if clip.dim() != 4 or clip.shape[1] != 3 or not clip.is_floating_point():
                raise ValueError(f"clip {i}: expected (T, 3, H, W) float, got {tuple(clip.shape)} "
                                 f"{clip.dtype}")
            t, _, h, w = clip.shape
            original_sizes.append((h, w))
            parts = [(clip - self.image_mean) / self.image_std]  # (T, 3, H, W)
            if flow_clips is not None:
                if flow_clips[i].shape != clip.shape:
                    raise ValueError(f"clip {i}: flow {tuple(flow_clips[i].shape)} does not match "
                                     f"frames {tuple(clip.shape)}")
                parts.append(flow_clips[i] / self.flow_std)
            # One resize call for the whole clip: every frame, flow and mask gets the same size.
            x = torch.cat(parts, dim=1).flatten(0, 1)  # (T * C, H, W)
            target = new_targets[i] if new_targets is not None else None
            x, target = self.rcnn.resize(x, target)
            if new_targets is not None:
                new_targets[i] = target
            x = x.unflatten(0, (t, -1))  # (T, C, h, w)
            if flow_clips is not None:
                sy, sx = x.shape[-2] / h, x.shape[-1] / w
                fx, fy = x[:, 3] * sx, x[:, 4] * sy
                x = torch.cat([x[:, :3], torch.stack([fx, fy, torch.hypot(fx, fy)], 1)], 1)
            stacked.append(x.flatten(0, 1))
        image_sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in stacked]
        batch = self.rcnn.batch_images(stacked, size_divisible=self.rcnn.size_divisible)
        batch = batch.unflatten(1, (clips[0].shape[0], -1))  # (B, T, C, Hp, Wp)
        flow = batch[:, :, 3:] if flow_clips is not None else None
        return ClipBatch(batch[:, :, :3], flow, image_sizes, original_sizes, new_targets)

    def postprocess(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Map ``boxes`` back to the input size and paste (N, 1, 28, 28) ``masks`` into it."""
        return self.rcnn.postprocess(detections, image_sizes, original_sizes)
