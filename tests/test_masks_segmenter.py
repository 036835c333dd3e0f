"""The segmenter network (pipeline.masks.segmenter), its weight files (pipeline.masks.weights)
and the class map of foreign checkpoints (pipeline.masks.labels)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pipeline.errors import DataError
from pipeline.masks.inference import predict_regions, set_postprocessing
from pipeline.masks.labels import COCO_TO_A2D, class_map_for, map_labels
from pipeline.masks.segmenter import build_segmenter
from pipeline.masks.weights import (infer_architecture, load_file, load_segmenter, load_state,
                                    save_model, state_dict_of)

SMALL = {"min_size": 37, "max_size": 64, "anchor_sizes": (8, 16, 32, 64, 128),
         "rois_per_image": 16, "mask_head_channels": 16}


def small_segmenter(depth: int = 18, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmenter(depth=depth, **{**SMALL, **kw})


def one_instance_target(h: int, w: int) -> dict[str, torch.Tensor]:
    masks = torch.zeros(1, h, w, dtype=torch.uint8)
    masks[0, 5:20, 7:30] = 1
    return {"boxes": torch.tensor([[7.0, 5.0, 30.0, 20.0]]), "labels": torch.tensor([3]),
            "masks": masks}


@pytest.mark.parametrize("depth", [18, 50])
def test_builds_and_runs_on_odd_sized_images(depth):
    model = small_segmenter(depth)
    assert model.roi_heads.box_predictor.cls_score.out_features == 8  # background + 7 actors
    model.train()
    losses = model([torch.rand(3, 37, 53)], [one_instance_target(37, 53)])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 37, 53), torch.rand(3, 41, 29)])
    for o, (h, w) in zip(out, [(37, 53), (41, 29)]):
        n = len(o["scores"])
        assert o["boxes"].shape == (n, 4) and o["labels"].shape == (n,)
        assert o["masks"].shape == (n, 1, h, w)


@pytest.mark.parametrize("mode, kept", [("train", 7), ("eval", 5)])
def test_rpn_keeps_the_asked_proposals_in_training_and_inference(mode, kept):
    model = small_segmenter(rpn_pre_nms_top_n=(9, 6), rpn_post_nms_top_n=(7, 5))
    getattr(model, mode)()
    targets = [one_instance_target(37, 53)] if mode == "train" else None
    images, targets = model.transform([torch.rand(3, 37, 53)], targets)
    with torch.no_grad():
        proposals, _ = model.rpn(images, model.backbone(images.tensors), targets)
    assert len(proposals[0]) == kept  # random weights: NMS leaves more than 7 of 5 x 9 boxes


def test_unknown_depth_and_norm_are_rejected():
    with pytest.raises(ValueError, match="depth"):
        build_segmenter(depth=42)
    with pytest.raises(ValueError, match="norm"):
        build_segmenter(depth=18, norm="layer")


def test_frozen_layers_do_not_train():
    model = small_segmenter(norm="frozen_bn", trainable_layers=2)
    body = model.backbone.body
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer2.parameters())
    assert all(p.requires_grad for p in body.layer4.parameters())


def test_predict_regions_respects_threshold_and_top_n():
    model = small_segmenter()
    set_postprocessing(model, score_threshold=0.0, top_n=3)
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    (reg,) = predict_regions(model, [image], torch.device("cpu"))
    assert len(reg) <= 3 and reg.masks.shape[1:] == (37, 53) and reg.masks.dtype == np.uint8
    assert np.all(np.diff(reg.scores) <= 0)  # highest score first
    set_postprocessing(model, score_threshold=1.0, top_n=3)
    (none,) = predict_regions(model, [image], torch.device("cpu"))
    assert len(none) == 0 and none.masks.shape == (0, 37, 53)


# --- weight files ---

class RunsCode:
    """Unpickling this calls os.system: what weights_only=True must refuse."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": RunsCode()}, path)
    with pytest.raises(DataError, match="refused to load") as err:
        load_file(path)
    assert str(path) in str(err.value)
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", b"PK\x03\x04truncated"])
def test_non_weights_file_is_a_data_error(tmp_path, content):
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not a readable PyTorch segmenter weights file") as err:
        load_file(path)
    assert str(path) in str(err.value)


def test_file_without_state_dict_names_its_keys(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(DataError, match="no state dict found.*epoch"):
        state_dict_of(load_file(path), path)
    with pytest.raises(DataError, match="weights file not found"):
        load_file(tmp_path / "missing.pt")


def test_model_file_round_trip_gives_the_same_predictions(tmp_path):
    rpn = {"rpn_pre_nms_top_n": [600, 300], "rpn_post_nms_top_n": [300, 100]}
    model = small_segmenter(**rpn).eval()
    arch = {"depth": 18, "num_classes": 8, "norm": "gn", **SMALL, **rpn}
    save_model(tmp_path / "model.pt", model, arch, {"iterations": 0})
    loaded, got_arch = load_segmenter(tmp_path / "model.pt")
    assert got_arch["depth"] == 18 and got_arch["mask_head_channels"] == 16
    assert loaded.rpn._post_nms_top_n == {"training": 300, "testing": 100}
    x = [torch.rand(3, 37, 53)]
    for m in (model, loaded):
        set_postprocessing(m, 0.0, 5)
    with torch.no_grad():
        a, b = model(x)[0], loaded(x)[0]
    torch.testing.assert_close(a["scores"], b["scores"])
    torch.testing.assert_close(a["masks"], b["masks"])


@pytest.mark.parametrize("widths", [
    {"mask_head_channels": 256, "fpn_channels": 256, "representation_size": 1024},  # torchvision
    {"mask_head_channels": 16, "fpn_channels": 32, "representation_size": 48},  # CPU recipe
])
def test_bare_coco_like_state_dict_gets_its_architecture_from_the_tensors(tmp_path, widths):
    # A torchvision-style checkpoint: bare state dict, frozen BN, 91 COCO classes.
    coco = small_segmenter(norm="frozen_bn", num_classes=91, **widths)
    torch.save(coco.state_dict(), tmp_path / "coco.pt")
    state = state_dict_of(load_file(tmp_path / "coco.pt"), "coco.pt")
    arch = infer_architecture(state, "coco.pt")
    assert arch == {"depth": 18, "norm": "frozen_bn", "num_classes": 91, **widths}
    model, used = load_segmenter(tmp_path / "coco.pt", defaults=SMALL)
    assert used["num_classes"] == 91 and used["min_size"] == SMALL["min_size"]


def test_mismatched_weights_name_the_file_and_the_keys(tmp_path):
    state = small_segmenter(depth=18).state_dict()
    with pytest.raises(DataError, match="do not fit.*missing") as err:
        load_state(small_segmenter(depth=34), state, tmp_path / "r18.pt")
    assert "r18.pt" in str(err.value)


def test_fine_tuning_drops_only_the_class_heads():
    coco = small_segmenter(num_classes=91).state_dict()
    a2d = small_segmenter(num_classes=8)
    dropped = load_state(a2d, coco, "coco", drop_class_heads=True)
    assert dropped and all(k.startswith(("roi_heads.box_predictor.",
                                         "roi_heads.mask_predictor.mask_fcn_logits."))
                           for k in dropped)
    torch.testing.assert_close(a2d.state_dict()["backbone.body.conv1.weight"],
                               coco["backbone.body.conv1.weight"])


# --- class maps ---

def test_class_maps():
    assert class_map_for(8) == {k: k for k in range(1, 8)}
    assert class_map_for(91) == COCO_TO_A2D
    assert class_map_for(5, {"2": 7}) == {2: 7}
    with pytest.raises(ValueError, match="checkpoint_class_map"):
        class_map_for(5)
    with pytest.raises(ValueError, match="0..7"):
        class_map_for(8, {"1": 9})
    # COCO person, dog, chair (no A2D actor -> 0)
    np.testing.assert_array_equal(map_labels(np.array([1, 18, 62]), COCO_TO_A2D), [1, 7, 0])
