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

from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from pipeline.masks.config import A2D_NUM_CLASSES  # 1 background + the 7 A2D actors
from pipeline.models.norms import head_norm_layer, norm_layer

#: Backbone depths and the torchvision ResNet each one builds.
DEPTHS: dict[int, str] = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
#: The anchor aspect ratios of torchvision's Mask R-CNN (one set per FPN level).
ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)


def build_segmenter(*, depth: int, num_classes: int = A2D_NUM_CLASSES, norm: str = "gn",
                    trainable_layers: int = 5, min_size: int = 800, max_size: int = 1333,
                    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
                    rois_per_image: int = 512, mask_head_channels: int = 256,
                    fpn_channels: int = 256, representation_size: int = 1024,
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
        score_threshold, detections_per_image: inference post-processing of the box head.

    Returns:
        The model. In eval mode ``model(images)`` takes a list of (3, H, W) float32 images in
        0..1 of any sizes and returns per image ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` in
        input pixels, ``labels`` (N,) int64, ``scores`` (N,) float32 and ``masks``
        (N, 1, H, W) float32 probabilities pasted into the full image.
    """
    if depth not in DEPTHS:
        raise ValueError(f"unsupported depth {depth}; choose one of {sorted(DEPTHS)}")
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes needs one size per FPN level (5), got {list(anchor_sizes)}")
    # What torchvision's resnet_fpn_backbone does, plus the FPN's normalisation (the extractor
    # is the one torchvision's own maskrcnn_resnet50_fpn_v2 uses).
    body = getattr(resnet, DEPTHS[depth])(weights=None, norm_layer=norm_layer(norm))
    fpn_norm = head_norm_layer(norm)
    backbone = _resnet_fpn_extractor(body, trainable_layers, norm_layer=fpn_norm)
    if fpn_channels != backbone.out_channels:
        # torchvision's extractor fixes 256 channels; it has frozen the same stages already
        stage2 = body.inplanes // 8  # layer1's output channels: 64 (ResNet-18/34), 256
        backbone = BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
                                   [stage2 * 2 ** k for k in range(4)], fpn_channels,
                                   norm_layer=fpn_norm)
    anchors = AnchorGenerator(sizes=tuple((int(s),) for s in anchor_sizes),
                              aspect_ratios=(ASPECT_RATIOS,) * len(anchor_sizes))
    model = MaskRCNN(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size,
                     rpn_anchor_generator=anchors, box_batch_size_per_image=rois_per_image,
                     box_score_thresh=score_threshold,
                     box_detections_per_img=detections_per_image)
    if representation_size != 1024 or fpn_channels != 256:
        model.roi_heads.box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
        model.roi_heads.box_predictor = FastRCNNPredictor(representation_size, num_classes)
    if mask_head_channels != 256 or norm == "gn":
        # torchvision's default heads, narrower and/or normalised (as its v2 models); the
        # parameter names stay those of torchvision.
        c = mask_head_channels
        model.roi_heads.mask_head = MaskRCNNHeads(
            backbone.out_channels, [c] * 4, 1, norm_layer=head_norm_layer(norm))
        model.roi_heads.mask_predictor = MaskRCNNPredictor(c, c, num_classes)
    return model
