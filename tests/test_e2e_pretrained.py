"""Ji et al. initialisation: torchvision Mask R-CNN / ImageNet ResNet key names onto the e2e model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from pipeline.config import stage_config, validate
from pipeline.e2e.config import E2EConfig, build_and_initialise
from pipeline.e2e.model import build_e2e_model
from pipeline.e2e.pretrained import PARTS, appearance_state, initialise
from pipeline.errors import DataError
from pipeline.masks.segmenter import build_segmenter
from pipeline.masks.weights import save_model

C, REP = 32, 64  # small pyramids and box heads: torchvision's key names, cheap tensors


def torchvision_maskrcnn(num_classes: int = 91, channels: int = C) -> MaskRCNN:
    """A torchvision Mask R-CNN on a ResNet-18 FPN (as torchvision builds it, narrower)."""
    body = torchvision.models.resnet18(weights=None)
    backbone = BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
                               [64, 128, 256, 512], channels, extra_blocks=LastLevelMaxPool())
    return MaskRCNN(backbone, box_head=TwoMLPHead(channels * 49, REP),
                    box_predictor=FastRCNNPredictor(REP, num_classes),
                    mask_head=MaskRCNNHeads(channels, [channels] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(channels, channels, num_classes))


def e2e(**kw):
    args = dict(depth=18, fpn_channels=C, representation_size=REP, norm="bn",
                trainable_layers=5)
    return build_e2e_model(**{**args, **kw})


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("w") / "maskrcnn_coco.pth"
    torch.save(torchvision_maskrcnn().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def _assert_loaded(model, mapped, report):
    own = model.state_dict()
    loaded = [k for k, v in mapped.items() if k in own and own[k].shape == v.shape]
    assert loaded and all(torch.equal(own[k], mapped[k]) for k in loaded)
    assert sum(n for p, n in report.loaded.items() if p != "motion backbone") == len(
        [k for k in loaded if not k.endswith("num_batches_tracked")])


def test_maskrcnn_and_imagenet_resnet_load_part_by_part(coco_file, imagenet_file):
    torch.manual_seed(0)
    model = e2e()
    report = initialise(model, str(coco_file), str(imagenet_file), 18)
    state = torch.load(coco_file, weights_only=True)
    _assert_loaded(model, appearance_state(state), report)
    own = model.state_dict()
    for part, prefix in PARTS.items():
        n = len([k for k in own if k.startswith(prefix) and not k.endswith("num_batches_tracked")])
        assert report.total[part] == n
    # every backbone/FPN/RPN tensor fits; of the heads, all but the 91-class predictors
    for part in ("appearance backbone", "appearance fpn", "rpn", "motion backbone"):
        assert report.loaded[part] == report.total[part]
    assert report.loaded["box head"] == 4 and report.total["box head"] == 8  # fc6, fc7
    assert report.loaded["mask head"] == 10 and report.total["mask head"] == 12
    assert sorted(report.reinitialised) == sorted(
        f"roi_heads.{k} (shape)" for k in (
            "box_predictor.cls_score.weight", "box_predictor.cls_score.bias",
            "box_predictor.bbox_pred.weight", "box_predictor.bbox_pred.bias",
            "mask_predictor.mask_fcn_logits.weight", "mask_predictor.mask_fcn_logits.bias"))
    resnet = torch.load(imagenet_file, weights_only=True)
    assert torch.equal(own["motion.body.layer4.1.conv2.weight"], resnet["layer4.1.conv2.weight"])
    assert report.unused == 6 + 2  # the class heads and the ImageNet classifier fc.*
    meta = report.as_meta()
    assert meta["sources"] == {"appearance": str(coco_file), "motion": str(imagenet_file)}


def test_torchvision_legacy_names_of_the_released_coco_file(tmp_path, coco_file):
    """torchvision's COCO_V1 file uses version-1 names that torchvision renames on load."""
    state = torch.load(coco_file, weights_only=True)
    legacy = {}
    for k, v in state.items():
        k = k.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for blocks in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                k = k.replace(f"backbone.fpn.{blocks}.{i}.0.", f"backbone.fpn.{blocks}.{i}.")
        for i in range(4):
            k = k.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        legacy[k] = v
    assert "rpn.head.conv.weight" in legacy and "roi_heads.mask_head.mask_fcn4.bias" in legacy
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    report = initialise(e2e(use_flow=False), str(path), None, 18)
    assert report.loaded["rpn"] == 6 and report.loaded["appearance fpn"] == 16
    assert report.loaded["mask head"] == 10


def test_imagenet_resnet_as_appearance_weights_loads_the_backbone_only(imagenet_file):
    report = initialise(e2e(), str(imagenet_file), None, 18)
    assert set(report.loaded) == {"appearance backbone"}
    assert report.loaded["appearance backbone"] == report.total["appearance backbone"]


def test_variant_without_mask_head_or_motion(coco_file, imagenet_file):
    report = initialise(e2e(use_mask_head=False, use_flow=False), str(coco_file),
                        str(imagenet_file), 18)
    assert "mask head" not in report.loaded and "motion backbone" not in report.loaded


def test_a_part_that_loads_nothing_is_an_error(tmp_path, coco_file):
    wide = tmp_path / "wide_fpn.pth"
    torch.save(torchvision_maskrcnn(channels=48).state_dict(), wide)
    with pytest.raises(DataError, match="appearance fpn: none of its 16 tensors fit") as err:
        initialise(e2e(), str(wide), None, 18)
    assert str(err.value).startswith(str(wide)) and "\n" not in str(err.value)
    r50 = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(DataError, match="motion backbone: .* tensors fit this model"):
        initialise(e2e(), None, str(r50), 18)
    junk = tmp_path / "junk.pth"
    torch.save({"something.else": torch.zeros(3)}, junk)
    with pytest.raises(DataError, match="neither a torchvision Mask R-CNN"):
        initialise(e2e(), str(junk), None, 18)


@pytest.mark.parametrize("norm,width,rep", [("bn", 256, 1024), ("gn", 32, 64)])
def test_pipeline_segmenter_checkpoint_initialises_the_appearance_stream(tmp_path, norm, width,
                                                                          rep):
    """Issue 11's lever: results/segmenter/model.pt (a torchvision Mask R-CNN) as e2e weights,
    at torchvision's widths and at narrow CPU widths with GroupNorm (the embedded default); its
    backbone also initialises the motion stream (motion_weights: segmenter)."""
    arch = {"depth": 18, "norm": norm, "mask_head_channels": width, "fpn_channels": width,
            "representation_size": rep}
    torch.manual_seed(3)
    seg = build_segmenter(**arch)
    path = tmp_path / "model.pt"
    save_model(path, seg, arch, {"steps": 1})
    model = build_e2e_model(depth=18, fpn_channels=width, representation_size=rep,
                            norm=norm, use_flow=True, num_frames=1)
    report = initialise(model, str(path), str(path), 18)  # motion_weights: segmenter, too
    for part in ("appearance backbone", "appearance fpn", "rpn", "box head", "mask head",
                 "motion backbone"):
        assert report.loaded[part] == report.total[part]
    assert report.reinitialised == []  # same 8 classes (bg + 7 actors)
    ours, theirs = model.state_dict(), seg.state_dict()
    for key in ("body.layer1.0.bn1.weight", "fpn.layer_blocks.0.0.weight"):
        assert torch.equal(ours[f"appearance.{key}"], theirs[f"backbone.{key}"])
    assert torch.equal(ours["motion.body.layer4.1.conv2.weight"],
                       theirs["backbone.body.layer4.1.conv2.weight"])
    assert torch.equal(ours["roi_heads.mask_head.0.0.weight"],
                       theirs["roi_heads.mask_head.0.0.weight"])
    if norm == "bn":
        assert torch.equal(ours["appearance.body.layer1.0.bn1.running_mean"],
                           theirs["backbone.body.layer1.0.bn1.running_mean"])


def test_segmenter_of_another_norm_is_refused_naming_the_norm(tmp_path):
    """A GroupNorm segmenter into a BatchNorm model: its FPN norm layers fit nothing."""
    arch = {"depth": 18, "norm": "gn", "mask_head_channels": 32, "fpn_channels": 32,
            "representation_size": 64}
    path = tmp_path / "model.pt"
    save_model(path, build_segmenter(**arch), arch, {"steps": 1})
    model = build_e2e_model(depth=18, fpn_channels=32, representation_size=64, norm="bn",
                            use_flow=False, num_frames=1)
    with pytest.raises(DataError, match="appearance fpn: .*width or norm"):
        initialise(model, str(path), None, 18)


def _cfg(**e2e_model):
    section = validate({"e2e_model": {"depth": 18, "fpn_channels": C, "representation_size": REP,
                                      **e2e_model}})["e2e_model"]
    return stage_config(E2EConfig, "e2e_model", section)


def test_frozen_bn_without_pretrained_weights_is_refused(coco_file, imagenet_file):
    with pytest.raises(ValueError, match="weights"):
        validate({"e2e_model": {"norm": "frozen_bn"}})
    with pytest.raises(ValueError, match="motion_weights"):
        validate({"e2e_model": {"norm": "frozen_bn", "weights": str(coco_file)}})
    cfg = dataclasses.replace(_cfg(), norm="frozen_bn")  # past the schema: checked at build
    with pytest.raises(ValueError, match="norm: frozen_bn needs pretrained weights"):
        build_and_initialise(cfg, "full")
    cfg = _cfg(norm="frozen_bn", weights=str(coco_file), motion_weights=str(imagenet_file))
    model, report = build_and_initialise(cfg, "full")
    assert report.loaded["motion backbone"] == report.total["motion backbone"]
    # no motion stream: the appearance weights suffice
    build_and_initialise(dataclasses.replace(cfg, motion_weights=None), "no_flow")
