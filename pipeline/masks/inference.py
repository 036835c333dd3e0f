"""Running the segmenter on frames and post-processing its output into :class:`Regions`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from pipeline.masks.labels import map_labels
from pipeline.masks.regions import Regions


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu`` / ``cuda`` / ``cuda:N`` as given.

    Raises:
        ValueError: ``cuda`` asked for on a machine without a usable GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available")
    return device


def set_postprocessing(model: nn.Module, score_threshold: float, top_n: int) -> None:
    """Make the box head keep detections scoring >= ``score_threshold``, at most ``top_n`` per
    image (after its per-class NMS), so nothing below the threshold is ever pasted."""
    model.roi_heads.score_thresh = float(score_threshold)
    model.roi_heads.detections_per_img = int(top_n)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def outputs_to_regions(output: dict[str, torch.Tensor], size: tuple[int, int],
                       class_map: Mapping[int, int] | None = None) -> Regions:
    """One image's Mask R-CNN output -> Regions, highest score first.

    Args:
        output: ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,), ``masks`` (N, 1, H, W)
            float probabilities, as torchvision returns them in eval mode.
        size: (H, W) of the frame.
        class_map: detector class -> A2D actor (:func:`pipeline.masks.labels.class_map_for`);
            None keeps the detector's labels (an A2D model).
    """
    h, w = size
    order = torch.argsort(output["scores"], descending=True, stable=True)
    scores = output["scores"][order].detach().cpu().numpy().astype(np.float32)
    labels = output["labels"][order].detach().cpu().numpy().astype(np.int64)
    boxes = output["boxes"][order].detach().cpu().numpy().astype(np.float32).reshape(-1, 4)
    probs = output["masks"][order].detach().reshape(len(order), h, w)
    # Rounded, not truncated: 0.5 stays 128 and Regions.binary(0.5) is prob >= 0.5 (+-1/510).
    masks = (probs.clamp(0, 1) * 255).round_().to(torch.uint8).cpu().numpy()
    if class_map is not None:
        labels = map_labels(labels, class_map)
    return Regions(boxes=boxes, scores=scores, labels=labels, masks=masks)


@torch.no_grad()
def predict_regions(model: nn.Module, images: list[np.ndarray], device: torch.device,
                    class_map: Mapping[int, int] | None = None) -> list[Regions]:
    """Run the segmenter (eval mode) on frames of any sizes.

    Args:
        images: (H, W, 3) uint8 RGB frames.
        class_map: see :func:`outputs_to_regions`.

    Returns:
        One Regions per image, masks at the image's own size.
    """
    model.eval()
    outputs = model([to_tensor(im).to(device) for im in images])
    return [outputs_to_regions(o, im.shape[:2], class_map) for o, im in zip(outputs, images)]
