"""Front-end: dilated ResNet streams, two-stream fusion, initialisation and weight files."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from pipeline import checkpoint
from pipeline.errors import DataError
from pipeline.models.frontend import (
    IMAGENET_MEAN, IMAGENET_STD, ResNetStream, TwoStreamFrontend, build_frontend,
    build_resnet_stream_trunk,
)

TRUNK_CHANNELS = {18: 512, 34: 512, 50: 2048, 101: 2048}


def _trunk_features(net: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


@pytest.mark.parametrize("depth, output_stride",
                         [(18, 8), (34, 8), (50, 8), (101, 8), (18, 16), (50, 16)])
def test_two_stream_shapes_and_output_stride(depth, output_stride):
    torch.manual_seed(0)
    frontend = build_frontend(depth, two_stream=True, output_stride=output_stride).eval()
    assert frontend.stride == output_stride
    assert frontend.out_channels == 2 * TRUNK_CHANNELS[depth]
    s = output_stride
    with torch.no_grad():
        for h, w in [(45, 61), (17, 24)]:
            rgb, flow = torch.rand(1, 3, h, w), torch.rand(1, 3, h, w)
            out = frontend(rgb, flow)
            assert out.shape == (1, frontend.out_channels, math.ceil(h / s), math.ceil(w / s))
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("output_stride, dense_size", [(8, (6, 8)), (16, (3, 4))])
def test_dilation_is_the_atrous_trick(depth, output_stride, dense_size):
    """The dilated trunk computes the strided trunk's features densely: sampling its output
    every 32/stride-th pixel gives exactly the stride-32 network (Chen et al., the "atrous
    algorithm"). This pins the dilation and padding of every conv in layer3/layer4, BasicBlock
    included."""
    torch.manual_seed(1)
    strided = torchvision.models.get_model(f"resnet{depth}", weights=None).eval()
    dilated = build_resnet_stream_trunk(depth, output_stride).eval()
    dilated.load_state_dict(strided.state_dict())
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        dense, sparse = _trunk_features(dilated, x), _trunk_features(strided, x)
    assert dense.shape[-2:] == dense_size and sparse.shape[-2:] == (2, 2)
    step = 32 // output_stride
    torch.testing.assert_close(dense[..., ::step, ::step], sparse, rtol=1e-4, atol=1e-4)


def test_unsupported_output_stride_is_refused():
    with pytest.raises(ValueError, match="output_stride"):
        build_resnet_stream_trunk(18, 32)


@pytest.mark.parametrize("depth", [18, 34])
def test_basic_block_dilations_follow_torchvision_convention(depth):
    trunk = build_resnet_stream_trunk(depth)
    for layer, d in ((trunk.layer3, 2), (trunk.layer4, 4)):
        first = layer[0]
        assert first.conv1.stride == (1, 1) and first.conv1.dilation == (d // 2, d // 2)
        assert first.conv2.dilation == (d, d) and first.downsample[0].stride == (1, 1)
        for block in layer[1:]:
            assert block.conv1.dilation == block.conv2.dilation == (d, d)
            assert block.conv1.padding == (d, d)


def test_rgb_only_and_reduction_channels():
    torch.manual_seed(0)
    rgb_only = build_frontend(18, two_stream=False)
    assert not rgb_only.two_stream and rgb_only.out_channels == 512
    reduced = build_frontend(18, two_stream=True, reduce_to=24)
    assert reduced.two_stream and reduced.out_channels == 48
    x = torch.rand(2, 3, 33, 40)
    assert rgb_only(x).shape == (2, 512, 5, 5)
    assert reduced(x, x).shape == (2, 48, 5, 5)
    with pytest.raises(ValueError, match="needs a flow"):
        reduced(x)
    with pytest.raises(ValueError, match="RGB-only"):
        rgb_only(x, x)
    with pytest.raises(ValueError, match="differ"):
        reduced(x, x[..., :32])


def test_fusion_concatenates_rgb_then_flow():
    torch.manual_seed(0)
    frontend = build_frontend(18, reduce_to=8, flow_init="random").eval()
    rgb, flow = torch.rand(1, 3, 29, 37), torch.rand(1, 3, 29, 37)
    with torch.no_grad():
        fused = frontend(rgb, flow)
        torch.testing.assert_close(fused[:, :8], frontend.rgb_stream(rgb))
        torch.testing.assert_close(fused[:, 8:], frontend.flow_stream(flow))


def test_stream_normalises_its_input():
    torch.manual_seed(0)
    trunk = build_resnet_stream_trunk(18).eval()
    stream = ResNetStream(trunk, IMAGENET_MEAN, IMAGENET_STD).eval()
    x = torch.rand(1, 3, 24, 32)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(stream(x), _trunk_features(trunk, normalised))
    # Statistics are arguments, not checkpoint state.
    assert "mean" not in stream.state_dict() and "std" not in stream.state_dict()


def test_flow_init_rgb_copies_weights_without_sharing():
    torch.manual_seed(0)
    frontend = build_frontend(18, flow_init="rgb", reduce_to=8)
    rgb_state, flow_state = frontend.rgb_stream.state_dict(), frontend.flow_stream.state_dict()
    assert rgb_state.keys() == flow_state.keys()
    for key in rgb_state:
        torch.testing.assert_close(rgb_state[key], flow_state[key], rtol=0, atol=0)
        assert rgb_state[key].data_ptr() != flow_state[key].data_ptr()
    random_flow = build_frontend(18, flow_init="random")
    assert not torch.equal(
        random_flow.rgb_stream.stem[0].weight, random_flow.flow_stream.stem[0].weight
    )
    with pytest.raises(ValueError, match="flow_init"):
        build_frontend(18, flow_init="imagenet")


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(5)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_local_weights_file_loads(tmp_path, resnet18_state, wrap):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state if wrap is None else {wrap: resnet18_state}, path)
    frontend = build_frontend(18, weights=path, flow_init="rgb")
    for stream in (frontend.rgb_stream, frontend.flow_stream):
        torch.testing.assert_close(stream.stem[0].weight, resnet18_state["conv1.weight"])
        torch.testing.assert_close(
            stream.layer4[1].bn2.running_var, resnet18_state["layer4.1.bn2.running_var"]
        )
    # A string path works as well as a Path.
    assert isinstance(build_frontend(18, two_stream=False, weights=str(path)), TwoStreamFrontend)


@pytest.mark.parametrize("name", ["IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"])
def test_torchvision_weights_name(monkeypatch, tmp_path, resnet18_state, name):
    """A weights name in any torchvision spelling (issue 14 item 1: the enum-qualified one was
    refused) is read from the hub cache; the download is replaced: no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cached = checkpoint.hub_cache_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    cached.parent.mkdir(parents=True)
    torch.save(resnet18_state, cached)
    frontend = build_frontend(18, weights=name)
    torch.testing.assert_close(frontend.flow_stream.stem[0].weight, resnet18_state["conv1.weight"])


def test_bad_weights_files_raise_clear_errors(tmp_path, resnet18_state):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match="garbage.pth: not a readable PyTorch"):
        build_frontend(18, weights=garbage)

    # weights_only=True refuses arbitrary pickled objects.
    pickled = tmp_path / "object.pth"
    torch.save({"conv1.weight": torchvision.models.resnet18()}, pickled)
    with pytest.raises(DataError, match="object.pth"):
        build_frontend(18, weights=pickled)

    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(DataError, match="no state dict found"):
        build_frontend(18, weights=not_a_dict)

    wrong = dict(resnet18_state)
    del wrong["layer1.0.conv1.weight"]
    wrong["conv1.weight"] = torch.zeros(64, 6, 7, 7)
    wrong_path = tmp_path / "wrong.pth"
    torch.save(wrong, wrong_path)
    with pytest.raises(DataError, match="do not fit the ResNet.*missing.*shape mismatch"):
        build_frontend(18, weights=wrong_path)
    with pytest.raises(DataError, match="do not fit the ResNet"):
        build_frontend(34, weights=tmp_path / "wrong.pth")

    with pytest.raises(DataError, match="not found"):
        build_frontend(18, weights=tmp_path / "missing.pth")
    with pytest.raises(DataError, match="IMAGENET9K_V7: not a weights name of ResNet18_Weights; "
                                        "valid: ResNet18_Weights.IMAGENET1K_V1"):
        build_frontend(18, weights="IMAGENET9K_V7")
    with pytest.raises(ValueError, match="depth"):
        build_frontend(152)
