"""Two-stream dilated ResNet front-end (Dang et al. 2018, section 3.2).

Each stream is a torchvision ResNet without its pooling and classifier, with the last two stages
dilated instead of strided (DeepLab), so features come out at 1/8 of the input size. Stream 1
sees the RGB frame, stream 2 the flow image; their features are concatenated along channels
("early fusion"). With ``flow_stream=None`` the same class is the RGB-only front-end.

Output size: for an (H, W) input the features are ``(ceil(H/8), ceil(W/8))`` (the stem conv,
the max-pool and layer2 each halve with ``ceil``).

Input normalisation happens inside :class:`ResNetStream` (detectron2 / SAM style: models take
images, not pre-normalised tensors):

- RGB: (B, 3, H, W) float32 in [0, 1], normalised with the ImageNet mean/std the torchvision
  weights were trained with.
- Flow: (B, 3, H, W) float32. For the colour-coded flow image (``pipeline.flow.encode.
  flow_to_rgb`` / 255, Dang et al.) keep the ImageNet statistics: the flow stream starts from
  ImageNet weights and sees the flow image as an image. For ``flow_to_xym`` (values of order 1,
  centred at 0) pass ``mean=(0, 0, 0), std=(1, 1, 1)`` to :func:`build_frontend`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from pipeline import checkpoint

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "RESNETS", "ResNetStream", "TwoStreamFrontend",
    "build_frontend", "build_resnet_stream", "build_resnet_stream_trunk", "load_resnet_weights",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: depth -> torchvision constructor. A plain dict: config picks the depth.
RESNETS: dict[int, Callable[..., ResNet]] = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}

# Keys of a torchvision ResNet state dict that the stream does not use.
_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")


def _dilate_basic_layer(layer: nn.Sequential, dilation: int) -> None:
    """Turn a strided stage of BasicBlocks into a dilated one, in place.

    torchvision's BasicBlock refuses ``dilation > 1``, so for ResNet-18/34 we edit the convs the
    way torchvision does it for Bottleneck (``_make_layer(dilate=True)``): the conv that had
    stride 2 gets stride 1 and the previous stage's dilation (``dilation // 2``), every later 3x3
    conv gets ``dilation``; padding equals dilation so sizes are kept. Parameter shapes, and so
    state-dict keys and ImageNet weights, are unchanged.
    """
    for block in layer:
        assert isinstance(block, BasicBlock)
        for conv in (block.conv1, block.conv2):
            strided = conv.stride == (2, 2)
            d = max(dilation // 2, 1) if strided else dilation
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
        block.stride = 1


#: Supported output strides: 8 (DeepLab-v2, the paper: layer3 and layer4 dilated) and 16
#: (DeepLab-v3's training stride: layer4 only), about 4x cheaper on layer3-4 and 4x smaller
#: feature caches.
OUTPUT_STRIDES = (8, 16)


def build_resnet_stream_trunk(depth: int, output_stride: int = 8) -> ResNet:
    """A randomly initialised torchvision ResNet of ``depth`` with ``output_stride`` 8 or 16."""
    if depth not in RESNETS:
        raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNETS)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    if depth in (18, 34):
        net = RESNETS[depth](weights=None)
        if output_stride == 8:
            _dilate_basic_layer(net.layer3, 2)
            _dilate_basic_layer(net.layer4, 4)
        else:
            _dilate_basic_layer(net.layer4, 2)
    else:
        net = RESNETS[depth](weights=None,
                             replace_stride_with_dilation=[False, output_stride == 8, True])
    return net


def load_resnet_weights(net: ResNet, weights: str | os.PathLike, depth: int) -> str:
    """Load ImageNet weights into ``net`` in place; the classifier (``fc.*``) is ignored.

    Args:
        net: a torchvision ResNet of ``depth`` (dilated or not: the parameters are the same).
        weights: a torchvision weights name of ``ResNet{depth}_Weights`` in any spelling
            torchvision accepts ("ResNet101_Weights.IMAGENET1K_V1", "IMAGENET1K_V1",
            "DEFAULT"; fetched once into the torch hub cache), or the path of a local
            state-dict file (``torch.save(model.state_dict())`` of a torchvision ResNet; a dict
            holding it under "state_dict" or "model" is also accepted). Both are read by
            :func:`pipeline.checkpoint.resolve` (``weights_only=True``).

    Returns:
        The source, for logs and provenance (the path or ``ResNet{depth}_Weights.NAME``).

    Raises:
        DataError: the file is missing or unreadable, not a ResNet-``depth`` state dict, the
            name is unknown (the message lists the valid ones), or the download failed.
    """
    enum = torchvision.models.get_model_weights(f"resnet{depth}")
    state, source = checkpoint.resolve(weights, enum=enum)
    checkpoint.load_state(net, state, source, ignore_prefixes=_CLASSIFIER_KEYS)
    return source


class ResNetStream(nn.Module):
    """One dilated ResNet stream: normalise, stem, layer1-4, optional 1x1 reduction.

    Args:
        trunk: a torchvision ResNet with output stride ``stride`` (see
            :func:`build_resnet_stream_trunk`).
            Its ``avgpool`` and ``fc`` are not used (and not kept).
        mean, std: per-channel input statistics subtracted/divided before the stem.
        reduce_to: if set, a 1x1 conv + BN + ReLU maps the 512 (ResNet-18/34) or 2048
            (ResNet-50/101) channels to ``reduce_to``, randomly initialised. It keeps a cache of
            fused features practical (two ResNet-101 streams give 4096 channels).

        stride: the trunk's output stride (8 or 16).

    Shapes: (B, 3, H, W) float32 -> (B, out_channels, ceil(H/s), ceil(W/s)) float32, s = stride.
    """

    def __init__(
        self,
        trunk: ResNet,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        reduce_to: int | None = None,
        stride: int = 8,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        self.layer1, self.layer2 = trunk.layer1, trunk.layer2
        self.layer3, self.layer4 = trunk.layer3, trunk.layer4
        trunk_channels = trunk.fc.in_features
        # Not persistent: statistics are arguments, not learned state, and keep checkpoints
        # free of keys that a different normalisation would make incompatible.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.reduce: nn.Module
        if reduce_to is None:
            self.reduce = nn.Identity()
            self.out_channels = trunk_channels
        else:
            self.reduce = nn.Sequential(
                nn.Conv2d(trunk_channels, reduce_to, 1, bias=False),
                nn.BatchNorm2d(reduce_to),
                nn.ReLU(inplace=True),
            )
            nn.init.kaiming_normal_(self.reduce[0].weight, mode="fan_out", nonlinearity="relu")
            self.out_channels = reduce_to

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        x = (x - self.mean) / self.std
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.reduce(x)


class TwoStreamFrontend(nn.Module):
    """RGB stream, optional flow stream, early fusion by channel concatenation.

    Args:
        rgb_stream: module mapping (B, 3, H, W) to (B, C1, h, w); must expose ``out_channels``
            and ``stride``.
        flow_stream: same contract (C2 channels, same stride), or None for the RGB-only model.

    Attributes:
        out_channels: C1 + C2 (two streams) or C1 (RGB only).
        stride: output stride (8).
        two_stream: whether ``forward`` needs a flow image.
    """

    def __init__(self, rgb_stream: nn.Module, flow_stream: nn.Module | None = None) -> None:
        super().__init__()
        if flow_stream is not None and flow_stream.stride != rgb_stream.stride:
            raise ValueError(f"stream strides differ: {rgb_stream.stride} vs {flow_stream.stride}")
        self.rgb_stream = rgb_stream
        self.flow_stream = flow_stream
        self.stride: int = rgb_stream.stride
        self.out_channels: int = rgb_stream.out_channels + (
            flow_stream.out_channels if flow_stream is not None else 0
        )

    @property
    def two_stream(self) -> bool:
        return self.flow_stream is not None

    def forward(self, rgb: Tensor, flow: Tensor | None = None) -> Tensor:
        """Fused features.

        Args:
            rgb: (B, 3, H, W) float32 in [0, 1].
            flow: (B, 3, H, W) float32 flow image (see the module docstring); required by a
                two-stream front-end, refused by an RGB-only one.

        Returns:
            (B, out_channels, ceil(H/8), ceil(W/8)) float32; RGB channels first.
        """
        if self.flow_stream is None:
            if flow is not None:
                raise ValueError("this front-end is RGB-only but a flow image was given")
            return self.rgb_stream(rgb)
        if flow is None:
            raise ValueError("this two-stream front-end needs a flow image")
        if flow.shape != rgb.shape:
            raise ValueError(f"rgb {tuple(rgb.shape)} and flow {tuple(flow.shape)} differ")
        return torch.cat([self.rgb_stream(rgb), self.flow_stream(flow)], dim=1)


def build_resnet_stream(
    depth: int,
    weights: str | os.PathLike | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    reduce_to: int | None = None,
    output_stride: int = 8,
) -> ResNetStream:
    """A dilated ResNet-``depth`` stream, ImageNet-initialised if ``weights`` is given."""
    trunk = build_resnet_stream_trunk(depth, output_stride)
    if weights is not None:
        load_resnet_weights(trunk, weights, depth)
    return ResNetStream(trunk, mean=mean, std=std, reduce_to=reduce_to, stride=output_stride)


def build_frontend(
    depth: int = 101,
    two_stream: bool = True,
    weights: str | os.PathLike | None = None,
    flow_init: str = "rgb",
    reduce_to: int | None = None,
    flow_mean: tuple[float, float, float] = IMAGENET_MEAN,
    flow_std: tuple[float, float, float] = IMAGENET_STD,
    output_stride: int = 8,
) -> TwoStreamFrontend:
    """Build the front-end of Dang et al. (two ResNet-101 streams by default).

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101.
        two_stream: False gives the RGB-only front-end.
        weights: ImageNet weights of the RGB stream: a torchvision weights name or a local
            state-dict file (see :func:`load_resnet_weights`); None = random initialisation.
        flow_init: "rgb" copies the RGB stream's trunk weights (and its reduction, if any) into
            the flow stream, the usual two-stream initialisation (Feichtenhofer et al. 2016);
            "random" leaves the flow stream randomly initialised.
        reduce_to: per-stream 1x1 reduction (see :class:`ResNetStream`); None keeps all channels.
        flow_mean, flow_std: flow stream input statistics (module docstring).
        output_stride: 8 (the paper) or 16 (see :data:`OUTPUT_STRIDES`).

    Returns:
        A :class:`TwoStreamFrontend` with ``out_channels`` = 2C (or C) and ``stride`` =
        ``output_stride``.
    """
    if flow_init not in ("rgb", "random"):
        raise ValueError(f"flow_init must be 'rgb' or 'random', got {flow_init!r}")
    rgb = build_resnet_stream(depth, weights, IMAGENET_MEAN, IMAGENET_STD, reduce_to,
                              output_stride)
    flow = None
    if two_stream:
        flow = build_resnet_stream(depth, None, flow_mean, flow_std, reduce_to, output_stride)
        if flow_init == "rgb":
            flow.load_state_dict(rgb.state_dict())
    return TwoStreamFrontend(rgb, flow)
