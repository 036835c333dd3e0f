"""ResNet + FPN pyramids: the detection backbone of the segmenter and of Ji et al.'s model.

Both methods build the same thing: a torchvision ResNet with the chosen normalisation
(:mod:`pipeline.models.norms`) under a Feature Pyramid Network (Lin et al. 2017) with levels
``"0"`` .. ``"3"`` at strides 4, 8, 16, 32, plus Mask R-CNN's parameter-free ``"pool"`` level
(stride 64) where an RPN reads it. torchvision's own extractor fixes the FPN at 256 channels;
the narrower widths of the CPU recipes are built here with the same stages frozen and the same
parameter names, so weights move between the two methods (``e2e_model.weights: segmenter``).
"""

from __future__ import annotations

from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from pipeline.models.frontend import RESNETS
from pipeline.models.norms import head_norm_layer, norm_layer

__all__ = ["TRAINABLE_STAGES", "build_pyramid_backbone"]

#: ResNet stages from the top, as torchvision's ``trainable_layers`` counts them.
TRAINABLE_STAGES: tuple[str, ...] = ("layer4", "layer3", "layer2", "layer1", "conv1")


class _NoExtraLevel(ExtraFPNBlock):
    """Keeps the FPN at exactly the four levels (a pyramid no RPN reads needs no ``"pool"``)."""

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
        norm: ``frozen_bn`` (pretrained statistics only), ``bn`` or ``gn``
            (:mod:`pipeline.models.norms`; ``gn`` also normalises the FPN).
        channels: FPN width; fewer than 256 only to make small CPU runs affordable.

    Returns:
        A module mapping (N, 3, H, W) float32 to an OrderedDict of (N, C, H/s, W/s) for
        s = 4..32 (and 64 for ``"pool"``), with ``out_channels = C = channels``. Parameter names
        are torchvision's (``body.*``, ``fpn.*``), whatever the width.
    """
    if depth not in RESNETS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNETS)}, got {depth}")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be 0..5, got {trainable_layers}")
    body = RESNETS[depth](weights=None, norm_layer=norm_layer(norm))
    train = list(TRAINABLE_STAGES[:trainable_layers])
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        if not name.startswith(tuple(train)):
            p.requires_grad_(False)
    in_stage2 = body.inplanes // 8  # layer1's output channels: 64 (ResNet-18/34) or 256
    return BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
                           [in_stage2 * 2 ** (k - 1) for k in (1, 2, 3, 4)], channels,
                           extra_blocks=LastLevelMaxPool() if pool_level else _NoExtraLevel(),
                           norm_layer=head_norm_layer(norm))
