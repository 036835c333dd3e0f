"""The instance segmenter: torchvision Mask R-CNN on a ResNet-FPN backbone.

The paper uses FCIS (Li et al. 2017); any instance segmenter producing boxes, scores and soft
masks serves (Dang et al. 2018, section 3.1), and Mask R-CNN is the one torchvision maintains.

Normalisation: torchvision's default ``FrozenBatchNorm2d`` is only right on top of pretrained
weights (frozen ImageNet statistics). Without them a frozen BN is the identity and the
activations of a randomly initialised ResNet grow layer after layer until the losses overflow
(measured here: ResNet-18, loss_mask 10 -> 780 -> 2e13 in three SGD steps). Training from scratch
therefore uses GroupNorm (He et al., "Rethinking ImageNet pre-training", 2019), which does not
depend on the tiny detection batch, and, as their from-scratch recipe does, also normalises the
FPN and the mask head: without it the un-normalised FPN features made the box classifier's loss
climb to ~15 within 20 steps at lr 0.01 (measured).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from pipeline.masks.config import A2D_NUM_CLASSES  # 1 background + the 7 A2D actors
from pipeline.models.norms import head_norm_layer
from pipeline.models.pyramid import build_pyramid_backbone

#: The anchor aspect ratios of torchvision's Mask R-CNN (one set per FPN level).
ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)


def build_segmenter(*, depth: int, num_classes: int = A2D_NUM_CLASSES, norm: str = "gn",
                    trainable_layers: int = 5, min_size: int = 800, max_size: int = 1333,
                    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
                    rois_per_image: int = 512, mask_head_channels: int = 256,
                    fpn_channels: int = 256, representation_size: int = 1024,
                    rpn_pre_nms_top_n: Sequence[int] = (2000, 1000),
                    rpn_post_nms_top_n: Sequence[int] = (2000, 1000),
                    score_threshold: float = 0.05, detections_per_image: int = 100) -> MaskRCNN:
    """Build a Mask R-CNN with a ResNet-``depth`` FPN backbone and random weights.

    Weights are loaded afterwards by :mod:`pipeline.masks.weights` (a local file or a
    torchvision weights name), so this function never touches the network.

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101.
        num_classes: detector classes including background (8 for A2D actors, 91 for COCO).
        norm: backbone normalisation, ``frozen_bn`` (pretrained backbones only), ``bn`` or
            ``gn`` (training from scratch).
        trainable_layers: backbone stages left trainable, 0..5 counted from the last one
            (5 = all, the only sensible value without pretrained backbone weights).
        min_size, max_size: the image is resized so that its short side is ``min_size`` unless
            the long side would exceed ``max_size`` (torchvision ``GeneralizedRCNNTransform``).
        anchor_sizes: one anchor size in pixels (of the resized image) per FPN level, 5 levels.
        rois_per_image: RoIs sampled per image to train the box and mask heads (a quarter at
            most are positives, and only those reach the mask head).
        mask_head_channels: width of the mask head's four 3x3 convolutions and deconvolution
            (torchvision: 256). Per positive RoI the head costs 0.46 GMAC at 256 channels,
            most of a CPU training step on small frames; 128 costs a quarter.
        fpn_channels: width of every FPN level (torchvision: 256), hence of the RPN head and
            of the RoI features the box and mask heads read.
        representation_size: width of the box head's two fully connected layers (torchvision:
            1024); its first layer reads ``fpn_channels`` x 7 x 7 features per RoI.
        rpn_pre_nms_top_n, rpn_post_nms_top_n: (train, test) RPN proposals kept per level
            before NMS and per image after it (torchvision: (2000, 1000) both). (600, 300) in
            training still leaves ~5x the sampled RoIs to choose from.
        score_threshold, detections_per_image: inference post-processing of the box head.

    Returns:
        The model. In eval mode ``model(images)`` takes a list of (3, H, W) float32 images in
        0..1 of any sizes and returns per image ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` in
        input pixels, ``labels`` (N,) int64, ``scores`` (N,) float32 and ``masks``
        (N, 1, H, W) float32 probabilities pasted into the full image.
    """
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes needs one size per FPN level (5), got {list(anchor_sizes)}")
    backbone = build_pyramid_backbone(depth, pool_level=True, trainable_layers=trainable_layers,
                                      norm=norm, channels=fpn_channels)
    anchors = AnchorGenerator(sizes=tuple((int(s),) for s in anchor_sizes),
                              aspect_ratios=(ASPECT_RATIOS,) * len(anchor_sizes))
    # torchvision's heads at the asked widths (its defaults: 1024 and 256), the mask head
    # normalised with gn as in its v2 models; parameter names stay torchvision's
    c = mask_head_channels
    model = MaskRCNN(
        backbone, num_classes=None, min_size=min_size, max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=int(rpn_pre_nms_top_n[0]),
        rpn_pre_nms_top_n_test=int(rpn_pre_nms_top_n[1]),
        rpn_post_nms_top_n_train=int(rpn_post_nms_top_n[0]),
        rpn_post_nms_top_n_test=int(rpn_post_nms_top_n[1]),
        box_batch_size_per_image=rois_per_image, box_score_thresh=score_threshold,
        box_detections_per_img=detections_per_image,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        mask_head=MaskRCNNHeads(fpn_channels, [c] * 4, 1, norm_layer=head_norm_layer(norm)),
        mask_predictor=MaskRCNNPredictor(c, c, num_classes))
    return model
