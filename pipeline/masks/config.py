"""Config sections ``masks`` (stage ``masks``) and ``segmenter`` (stage ``train_segmenter``).

Both are documented, with their defaults, in ``workflow/schemas/config.schema.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.a2d.classes import NUM_ACTORS

#: Background + the 7 actors (also pipeline.masks.segmenter's default; kept torch-free here).
A2D_NUM_CLASSES = 1 + NUM_ACTORS


@dataclass(frozen=True)
class MasksConfig:
    source: str              # model | checkpoint | gt: which regions `all_masks` builds
    top_n: int               # regions kept per frame, highest score first
    score_threshold: float   # regions scoring below are dropped (model, checkpoint)
    batch_size: int          # frames per forward pass


@dataclass(frozen=True)
class SegmenterConfig:
    device: str                       # auto | cpu | cuda
    depth: int                        # ResNet depth of the FPN backbone: 18, 34, 50, 101
    norm: str                         # frozen_bn | bn | gn (backbone normalisation)
    trainable_layers: int             # backbone stages trained, 0..5 from the last
    weights: str | None               # whole-detector init: path or torchvision weights name
    backbone_weights: str | None      # backbone init: path or torchvision weights name
    min_size: int                     # short side of the resized image
    max_size: int                     # cap on the long side of the resized image
    anchor_sizes: tuple[int, ...]     # one anchor size per FPN level (5)
    rois_per_image: int               # RoIs sampled per image for the box/mask heads
    mask_head_channels: int           # width of the mask head (torchvision: 256)
    batch_size: int                   # images per SGD step
    iterations: int                   # SGD steps
    lr: float                         # base learning rate
    momentum: float
    weight_decay: float
    warmup_iterations: int            # linear warm-up from lr/1000
    lr_decay_at: tuple[float, ...]    # fractions of `iterations` where lr is multiplied ...
    lr_decay_factor: float            # ... by this factor
    hflip: bool                       # random horizontal flips
    checkpoint_every: int             # steps between training checkpoints (resume points)
    log_every: int                    # steps between loss lines in the log
    seed: int
    num_workers: int                  # DataLoader worker processes
    checkpoint: str | None            # weights file of masks.source = checkpoint
    checkpoint_class_map: dict[str, int] | None  # its detector class -> A2D actor; null = auto
    # micro-batches per step and process (gradient accumulation; batch_size stays the global
    # batch). Defaulted: configs of checkpoints written before the key existed still load.
    accumulate: int = 1
    fpn_channels: int = 256           # FPN width (torchvision: 256)
    representation_size: int = 1024   # box head width (torchvision: 1024)
    # short sides a training frame is resized to, one drawn per image (multi-scale training);
    # empty = min_size only. Inference always uses min_size.
    train_sizes: tuple[int, ...] = ()
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000)   # (train, test), torchvision's
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000)  # (train, test), torchvision's

    def arch(self) -> dict[str, Any]:
        """The ``build_segmenter`` arguments of the network this section trains."""
        return {"depth": self.depth, "num_classes": A2D_NUM_CLASSES, "norm": self.norm,
                "trainable_layers": self.trainable_layers, "min_size": self.min_size,
                "max_size": self.max_size, "anchor_sizes": list(self.anchor_sizes),
                "rois_per_image": self.rois_per_image,
                "mask_head_channels": self.mask_head_channels,
                "fpn_channels": self.fpn_channels,
                "representation_size": self.representation_size,
                "rpn_pre_nms_top_n": list(self.rpn_pre_nms_top_n),
                "rpn_post_nms_top_n": list(self.rpn_post_nms_top_n)}

    def inference_defaults(self) -> dict[str, Any]:
        """Image size and anchors for a checkpoint that does not carry its own architecture."""
        return {"min_size": self.min_size, "max_size": self.max_size,
                "anchor_sizes": list(self.anchor_sizes), "rois_per_image": self.rois_per_image}
