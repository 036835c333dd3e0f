"""Region-to-pixel layer (Eq. 2-3) and the region back-end."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models.losses import EQ1_WEIGHTS, SegmentationLoss, check_finite, weighted_total
from pipeline.models.region_head import RegionHead, build_region_segmenter, resize_masks
from pipeline.models.region_to_pixel import region_to_pixel, region_to_pixel_reference


def _random_masks(n: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """Soft masks, exactly 0 on ~half the pixels and on the last column (never covered)."""
    soft = torch.rand(n, h, w, generator=generator, dtype=torch.float64)
    keep = torch.rand(n, h, w, generator=generator, dtype=torch.float64) < 0.5
    keep[..., -1] = False
    return soft * keep


def _scalar_oracle(scores, masks, fill, threshold):
    """Eq. 2 in log space, pixel by pixel, class by class, region by region, in Python floats."""
    n, k = scores.shape
    h, w = masks.shape[1:]
    out = torch.empty(k, h, w, dtype=torch.float64)
    for c in range(k):
        for y in range(h):
            for x in range(w):
                best = -math.inf
                for i in range(n):
                    m = float(masks[i, y, x])
                    if m > threshold:
                        best = max(best, float(scores[i, c]) + math.log(m))
                out[c, y, x] = best if best > -math.inf else fill
    return out


@pytest.mark.parametrize(
    "n, k, h, w, threshold",
    [(0, 8, 5, 7, 0.0), (1, 8, 5, 7, 0.0), (3, 10, 9, 11, 0.0), (6, 4, 7, 6, 0.3),
     (12, 3, 4, 9, 0.0)],
)
def test_region_to_pixel_matches_the_scalar_definition(n, k, h, w, threshold):
    g = torch.Generator().manual_seed(n * 100 + k)
    scores = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    masks = _random_masks(n, h, w, g)
    expected = _scalar_oracle(scores, masks, fill=-0.5, threshold=threshold)
    got = region_to_pixel(scores, masks, fill=-0.5, mask_threshold=threshold)
    assert got.shape == (k, h, w)
    torch.testing.assert_close(got, expected)
    if n > 0:
        assert (got == -0.5).all(dim=0).any(), "the case should include uncovered pixels"


@pytest.mark.parametrize(
    "n, k, h, w", [(1, 8, 6, 9), (4, 10, 11, 13), (9, 3, 5, 17), (30, 8, 7, 9)]
)
@pytest.mark.parametrize("max_chunk_elements", [1, 37, 1 << 24])
def test_region_to_pixel_matches_reference_values_and_gradients(n, k, h, w, max_chunk_elements):
    g = torch.Generator().manual_seed(7 * n + h)
    scores = torch.randn(n, k, generator=g, dtype=torch.float64)
    masks = _random_masks(n, h, w, g)
    upstream = torch.randn(k, h, w, generator=g, dtype=torch.float64)
    grads = []
    for fn, kwargs in ((region_to_pixel, {"max_chunk_elements": max_chunk_elements}),
                       (region_to_pixel_reference, {})):
        s, m = scores.clone().requires_grad_(), masks.clone().requires_grad_()
        y = fn(s, m, **kwargs)
        (y * upstream).sum().backward()
        grads.append((y.detach(), s.grad, m.grad))
    (y_fast, gs_fast, gm_fast), (y_ref, gs_ref, gm_ref) = grads
    torch.testing.assert_close(y_fast, y_ref)
    torch.testing.assert_close(gs_fast, gs_ref)
    torch.testing.assert_close(gm_fast, gm_ref)
    assert torch.isfinite(gs_fast).all() and torch.isfinite(gm_fast).all()


def test_region_to_pixel_gradcheck():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    # Masks bounded away from 0 and from the threshold, so finite differences stay on one side.
    masks = (0.2 + 0.8 * torch.rand(4, 3, 5, generator=g, dtype=torch.float64))
    masks = (masks * (torch.rand(4, 3, 5, generator=g) < 0.6)).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, m: region_to_pixel(s, m), (scores, masks))


def test_uncovered_pixels_get_fill_and_no_gradient():
    scores = torch.randn(2, 3, requires_grad=True)
    masks = torch.zeros(2, 4, 5)
    masks[0, :2, :2] = 0.7
    masks[1, 1:3, 1:3] = 1.0
    fill = torch.randn(3, 4, 5, requires_grad=True)
    y = region_to_pixel(scores, masks, fill=fill)
    uncovered = masks.sum(0) == 0
    torch.testing.assert_close(y[:, uncovered], fill[:, uncovered])
    y.sum().backward()
    # Each covered (class, pixel) sends gradient 1 to exactly one region; uncovered ones to fill.
    assert scores.grad.sum().item() == pytest.approx(3 * int((~uncovered).sum()))
    assert (fill.grad[:, uncovered] == 1).all() and (fill.grad[:, ~uncovered] == 0).all()
    # No region at all: everything is fill, and the output shape still comes from the masks.
    empty = region_to_pixel(torch.zeros(0, 3), torch.zeros(0, 4, 5), fill=2.0)
    assert empty.shape == (3, 4, 5) and (empty == 2.0).all()


def test_binary_masks_give_caesar_max_and_logit_shift_invariance():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 6, generator=g)
    masks = (torch.rand(3, 8, 10, generator=g) < 0.5).float()
    y = region_to_pixel(scores, masks)
    covered = masks.sum(0) > 0
    caesar = torch.where(
        masks.bool()[:, None], scores[:, :, None, None], torch.tensor(-math.inf)
    ).amax(dim=0)
    torch.testing.assert_close(y[:, covered], caesar[:, covered])
    shifted = region_to_pixel(scores + 4.0, masks)
    torch.testing.assert_close(shifted[:, covered], y[:, covered] + 4.0)


def test_bad_region_to_pixel_inputs():
    with pytest.raises(ValueError, match="same N"):
        region_to_pixel(torch.zeros(2, 3), torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="float"):
        region_to_pixel(torch.zeros(1, 3), torch.ones(1, 4, 4, dtype=torch.uint8))


# --- region back-end ------------------------------------------------------------------------

H, W = 45, 61  # image size; features at stride 8 are 6 x 8


def _regions(seed: int):
    """Two images: three overlapping binary actor masks on the first, none on the second."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(3, H, W)
    boxes = torch.tensor(
        [[2.0, 3.0, 25.0, 30.0], [20.0, 10.0, 50.0, 40.0], [40.0, 1.0, 60.0, 20.0]]
    )
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
        mask[y1:y2, x1:x2] = (torch.rand(y2 - y1, x2 - x1, generator=g) < 0.8).float()
    return [(boxes, masks), (torch.zeros(0, 4), torch.zeros(0, H, W))]


@pytest.mark.parametrize("pooling", ["align", "pool"])
@pytest.mark.parametrize("mask_pooling", [False, True])
@pytest.mark.parametrize("output_size", [None, (6, 8)])
def test_region_segmenter_shapes(pooling, mask_pooling, output_size):
    torch.manual_seed(0)
    model = build_region_segmenter(
        24, pool_size=3, pooling=pooling, mask_pooling=mask_pooling, hidden_dim=32
    )
    out = model(torch.randn(2, 24, 6, 8), _regions(0), (H, W), output_size=output_size)
    size = (H, W) if output_size is None else output_size
    assert out["actor"].shape == (2, 8, *size) and out["action"].shape == (2, 10, *size)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("mode", ["complement", "frame"])
def test_context_region_labels_frames_without_regions(mode):
    torch.manual_seed(0)
    head = RegionHead(24, 8, pool_size=3, hidden_dim=32, context_region=mode)
    features = torch.randn(2, 24, 6, 8)
    scores = head.region_scores(features, _regions(0), (H, W))
    assert [s.shape for s in scores] == [(4, 8), (1, 8)]  # three regions + context, context only
    out = head(features, _regions(0), (H, W))
    # No region on image 2: every pixel carries the context region's scores.
    torch.testing.assert_close(out[1], scores[1][0][:, None, None].expand(8, H, W))
    # Image 1, pixels outside every mask: the context region's scores.
    masks = _regions(0)[0][1]
    outside = masks.sum(0) == 0
    vectors = out[0][:, outside]
    torch.testing.assert_close(vectors, scores[0][-1][:, None].expand_as(vectors))
    no_context = RegionHead(24, 8, pool_size=3, hidden_dim=32, context_region="none")
    assert (no_context(features, _regions(0), (H, W))[1] == 0).all()


def test_complement_context_leaves_region_pixels_to_the_regions():
    """complement: inside a binary mask only the regions compete; frame: the context does too."""
    torch.manual_seed(0)
    features = torch.randn(2, 24, 6, 8)
    regions = _regions(0)
    masks = regions[0][1]
    alone = (masks == 1) & (masks.sum(0) == 1)  # covered by exactly one region
    for mode in ("complement", "frame"):
        head = RegionHead(24, 8, pool_size=3, hidden_dim=32, context_region=mode)
        scores = head.region_scores(features, regions, (H, W))[0]
        out = head(features, regions, (H, W))[0]
        for i in range(len(masks)):
            assert (scores[-1] > scores[i]).any()  # the two modes differ on these pixels
            pix = out[:, alone[i]]
            if mode == "complement":
                torch.testing.assert_close(pix, scores[i][:, None].expand_as(pix))
            else:  # max with the context region's scores
                expected = torch.maximum(scores[i], scores[-1])[:, None].expand_as(pix)
                torch.testing.assert_close(pix, expected)
    with pytest.raises(ValueError, match="context_region"):
        RegionHead(24, 8, context_region="everywhere")


def test_binarize_gives_a_soft_region_its_pixels_back_from_the_context():
    """A soft mask (0.3 / 0.7): with probabilities the complement context (0.7 / 0.3 there)
    competes on the region's pixels; binarized at 0.5 the region alone labels m >= 0.5 and the
    context alone the rest. Equal to the soft head on an already-binary mask."""
    torch.manual_seed(0)
    features = torch.randn(1, 24, 6, 8)
    boxes = torch.tensor([[4.0, 6.0, 40.0, 30.0]])
    soft = torch.zeros(1, H, W)
    soft[0, 6:30, 4:40] = 0.3
    soft[0, 10:26, 10:34] = 0.7
    head = RegionHead(24, 8, pool_size=3, hidden_dim=32)
    binar = RegionHead(24, 8, pool_size=3, hidden_dim=32, binarize=0.5)
    binar.load_state_dict(head.state_dict())
    scores = head.region_scores(features, [(boxes, soft)], (H, W))[0]  # region, context
    out = binar(features, [(boxes, soft)], (H, W))[0]
    torch.testing.assert_close(out[:, soft[0] >= 0.5], scores[0][:, None].expand(8, 16 * 24))
    low = soft[0] < 0.5
    torch.testing.assert_close(out[:, low], scores[1][:, None].expand(8, int(low.sum())))
    # With probabilities the 0.7 pixels take the max of the region (log 0.7) and context (log 0.3).
    expected = torch.maximum(scores[0] + math.log(0.7), scores[1] + math.log(0.3))
    pix = head(features, [(boxes, soft)], (H, W))[0][:, soft[0] == 0.7]
    torch.testing.assert_close(pix, expected[:, None].expand_as(pix))
    hard = (soft >= 0.5).float()
    torch.testing.assert_close(binar(features, [(boxes, soft)], (H, W)),
                               head(features, [(boxes, hard)], (H, W)))
    with pytest.raises(ValueError, match="binarize"):
        RegionHead(24, 8, binarize=0.0)


def test_one_label_per_region():
    """The paper's point: all pixels of one region (mask 1, no competing region) agree."""
    torch.manual_seed(1)
    model = build_region_segmenter(24, pool_size=3, hidden_dim=32)
    regions = _regions(1)
    out = model(torch.randn(2, 24, 6, 8), regions, (H, W))
    masks = regions[0][1]
    for task, logits in out.items():
        labels = logits[0].argmax(dim=0)
        for i in range(len(masks)):
            alone = (masks[i] == 1) & (masks.sum(0) == 1)
            assert alone.sum() > 20
            assert labels[alone].unique().numel() == 1, (task, i)
            # ... and they all carry identical score vectors.
            vectors = logits[0][:, alone]
            torch.testing.assert_close(vectors, vectors[:, :1].expand_as(vectors))


def test_mask_pooling_suppresses_features_outside_the_mask():
    torch.manual_seed(0)
    head = RegionHead(4, 8, pool_size=2, hidden_dim=16, mask_pooling=True, context_region="none")
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    masks = torch.zeros(1, 32, 32)
    masks[0, :16] = 1.0  # top half of the box
    a, b = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    b[..., :2, :] = a[..., :2, :]  # same features in the top half only
    scores_a = head.region_scores(a, [(boxes, masks)], (32, 32))[0]
    scores_b = head.region_scores(b, [(boxes, masks)], (32, 32))[0]
    torch.testing.assert_close(scores_a, scores_b)
    plain = RegionHead(4, 8, pool_size=2, hidden_dim=16, context_region="none")
    plain.load_state_dict(head.state_dict())
    assert not torch.allclose(plain.region_scores(a, [(boxes, masks)], (32, 32))[0],
                              plain.region_scores(b, [(boxes, masks)], (32, 32))[0])


def test_resize_masks_and_input_checks():
    masks = torch.zeros(2, 40, 64)
    masks[0, :20] = 1.0
    small = resize_masks(masks, (5, 8))
    assert small.shape == (2, 5, 8) and small.min() >= 0 and small.max() <= 1
    assert (small[0, :2] == 1).all() and (small[0, 3:] == 0).all() and (small[1] == 0).all()
    assert resize_masks(torch.zeros(0, 40, 64), (5, 8)).shape == (0, 5, 8)
    head = RegionHead(4, 8, pool_size=2, hidden_dim=8)
    features = torch.randn(1, 4, 5, 8)
    with pytest.raises(ValueError, match="region sets"):
        head(features, _regions(0), (H, W))
    with pytest.raises(ValueError, match="masks"):
        head(features, [(torch.zeros(1, 4), torch.zeros(2, H, W))], (H, W))
    with pytest.raises(ValueError, match="pooling"):
        RegionHead(4, 8, pooling="max")


def _region_labels(regions, size):
    """Labels consistent with the regions: region i is actor 1+i, action 1+2i; rest background."""
    actor = torch.zeros(len(regions), *size, dtype=torch.long)
    action = torch.zeros_like(actor)
    for b, (_, masks) in enumerate(regions):
        for i, mask in enumerate(resize_masks(masks, size)):
            actor[b][mask > 0.5] = 1 + i
            action[b][mask > 0.5] = 1 + 2 * i
    return {"actor": actor, "action": action}


@pytest.mark.parametrize("mask_pooling", [False, True])
def test_region_segmenter_overfits_fixed_features(mask_pooling):
    torch.manual_seed(0)
    features = torch.randn(2, 16, 6, 8)
    regions = _regions(2)
    labels = _region_labels(regions, (H, W))
    model = build_region_segmenter(16, pool_size=3, hidden_dim=64, mask_pooling=mask_pooling)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = SegmentationLoss()
    history = []
    for step in range(50):
        # At image resolution the region masks can represent the labels exactly.
        losses = criterion(model(features, regions, (H, W)), labels)
        check_finite(losses, step)
        loss = weighted_total(losses, EQ1_WEIGHTS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.2 * history[0], history[::10]
