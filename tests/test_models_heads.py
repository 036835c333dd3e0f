"""DeepLab heads, the baseline segmenter and the Eq. 1 loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.aspp import ASPPV2Head, build_aspp_head
from pipeline.models.baseline import build_baseline
from pipeline.models.losses import (
    EQ1_WEIGHTS, SegmentationLoss, check_finite, weighted_total,
)


@pytest.mark.parametrize("variant", ["v2", "v3"])
@pytest.mark.parametrize("num_classes", [8, 10])
def test_aspp_head_keeps_size(variant, num_classes):
    torch.manual_seed(0)
    head = build_aspp_head(32, num_classes, variant)
    out = head(torch.randn(2, 32, 45, 61))
    assert out.shape == (2, num_classes, 45, 61)
    assert head.num_classes == num_classes


def test_aspp_v2_is_a_sum_of_atrous_branches():
    torch.manual_seed(0)
    head = ASPPV2Head(16, 5, rates=(6, 12, 18, 24))
    assert [b.dilation for b in head.branches] == [(r, r) for r in (6, 12, 18, 24)]
    x = torch.randn(1, 16, 13, 17)
    expected = sum(F.conv2d(x, b.weight, b.bias, padding=b.padding, dilation=b.dilation)
                   for b in head.branches)
    torch.testing.assert_close(head(x), expected)
    with pytest.raises(ValueError, match="variant"):
        build_aspp_head(16, 5, "v4")
    with pytest.raises(ValueError, match="rate"):
        ASPPV2Head(16, 5, rates=())


@pytest.mark.parametrize("two_stream", [True, False])
def test_baseline_shapes_and_heads_forward(two_stream):
    torch.manual_seed(0)
    model = build_baseline(18, two_stream=two_stream, reduce_to=16).eval()
    rgb = torch.rand(2, 3, 45, 61)
    flow = torch.rand(2, 3, 45, 61) if two_stream else None
    with torch.no_grad():
        out = model(rgb, flow)
        assert set(out) == {"actor", "action"}
        assert out["actor"].shape == (2, 8, 6, 8) and out["action"].shape == (2, 10, 6, 8)
        # The back-end alone on (cached) features gives the same logits.
        cached = model.frontend(rgb, flow)
        assert cached.shape == (2, 32 if two_stream else 16, 6, 8)
        again = model.heads_forward(cached)
    for task in out:
        torch.testing.assert_close(again[task], out[task])
    assert model.stride == 8


@pytest.mark.parametrize("output_stride, rates", [(8, [6, 12, 18, 24]), (16, [3, 6, 9, 12])])
def test_baseline_output_stride_scales_default_rates(output_stride, rates):
    model = build_baseline(18, two_stream=False, reduce_to=8, output_stride=output_stride)
    assert model.stride == output_stride
    for head in (model.actor_head, model.action_head):
        assert [conv.dilation[0] for conv in head.branches] == rates
    explicit = build_baseline(18, two_stream=False, reduce_to=8, rates=[2, 4],
                              output_stride=output_stride)
    assert [conv.dilation[0] for conv in explicit.actor_head.branches] == [2, 4]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 45, 61))
    assert out["actor"].shape[-2:] == (-(-45 // output_stride), -(-61 // output_stride))


def test_loss_is_eq1_cross_entropies():
    torch.manual_seed(0)
    actor, action = torch.randn(2, 8, 3, 4), torch.randn(2, 10, 3, 4)
    labels = {"actor": torch.randint(0, 8, (2, 3, 4)), "action": torch.randint(0, 10, (2, 3, 4))}
    losses = SegmentationLoss()({"actor": actor, "action": action}, labels)
    assert set(losses) == {"loss_actor", "loss_action"}
    # -log p(o_j) by hand, averaged over the 24 pixels.
    for task, logits in (("actor", actor), ("action", action)):
        p = logits.softmax(dim=1)
        picked = p.gather(1, labels[task][:, None])[:, 0]
        torch.testing.assert_close(losses[f"loss_{task}"], -picked.log().mean())
    total = weighted_total(losses, EQ1_WEIGHTS)
    torch.testing.assert_close(total, losses["loss_actor"] + losses["loss_action"])
    torch.testing.assert_close(
        weighted_total(losses, {"loss_actor": 2.0, "loss_action": 0.5}),
        2 * losses["loss_actor"] + 0.5 * losses["loss_action"],
    )
    with pytest.raises(KeyError, match="loss_action"):
        weighted_total(losses, {"loss_actor": 1.0})


def test_loss_resizing_modes():
    torch.manual_seed(0)
    outputs = {"actor": torch.randn(1, 8, 6, 8), "action": torch.randn(1, 10, 6, 8)}
    labels = {
        "actor": torch.randint(0, 8, (1, 45, 61)), "action": torch.randint(0, 10, (1, 45, 61))
    }
    up = SegmentationLoss("logits")(outputs, labels)
    expected = F.cross_entropy(
        F.interpolate(outputs["actor"], size=(45, 61), mode="bilinear", align_corners=False),
        labels["actor"],
    )
    torch.testing.assert_close(up["loss_actor"], expected)
    down = SegmentationLoss("labels")(outputs, labels)
    small = F.interpolate(labels["actor"][:, None].float(), size=(6, 8), mode="nearest")
    torch.testing.assert_close(
        down["loss_actor"], F.cross_entropy(outputs["actor"], small[:, 0].long())
    )
    with pytest.raises(ValueError, match="resize"):
        SegmentationLoss("nearest")


def test_loss_ignore_index_and_all_ignored():
    logits = torch.randn(1, 8, 2, 2, requires_grad=True)
    labels = torch.tensor([[[1, 255], [255, 255]]])
    out = {"actor": logits, "action": torch.randn(1, 10, 2, 2)}
    losses = SegmentationLoss()(out, {"actor": labels, "action": torch.full((1, 2, 2), 255)})
    torch.testing.assert_close(losses["loss_actor"], -logits.log_softmax(1)[0, 1, 0, 0])
    assert losses["loss_action"].item() == 0.0  # not NaN
    weighted_total(losses, EQ1_WEIGHTS).backward()
    assert torch.isfinite(logits.grad).all()


def test_check_finite_names_the_step():
    check_finite({"loss_actor": torch.tensor(1.0), "loss_action": 2.0}, step=3)
    with pytest.raises(FloatingPointError, match=r"step 17: \['loss_action'\]"):
        check_finite({"loss_actor": torch.tensor(1.0), "loss_action": torch.tensor(math.nan)}, 17)
    with pytest.raises(FloatingPointError, match="step stage2/40"):
        check_finite({"loss_actor": torch.tensor(math.inf)}, "stage2/40")


def _blocky_labels(batch: int, h: int, w: int) -> dict[str, torch.Tensor]:
    """Per-image actor/action rectangles on background, like A2D label maps."""
    actor = torch.zeros(batch, h, w, dtype=torch.long)
    action = torch.zeros(batch, h, w, dtype=torch.long)
    actor[0, 8:24, 5:20], action[0, 8:24, 5:20] = 1, 8  # adult-walking
    actor[1, 12:30, 20:38], action[1, 12:30, 20:38] = 7, 7  # dog-running
    return {"actor": actor, "action": action}


def test_baseline_overfits_a_tiny_batch():
    torch.manual_seed(0)
    # RGB-only ResNet-18 at 33x41 keeps this at a few seconds on 2 CPU cores.
    model = build_baseline(18, two_stream=False, reduce_to=16)
    rgb = torch.rand(2, 3, 33, 41)
    labels = _blocky_labels(2, 33, 41)
    criterion = SegmentationLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(50):
        losses = criterion(model(rgb), labels)
        check_finite(losses, step)
        loss = weighted_total(losses, EQ1_WEIGHTS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.25 * history[0], history[::10]
