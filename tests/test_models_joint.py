"""Joint actor-action post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.a2d.classes import JOINT_IDS, VALID_PAIRS
from pipeline.models.joint import joint_labels, joint_log_probs, resize_logits


def _brute_force(actor_logits, action_logits, background):
    """Pixel by pixel: the 44 candidate products, arg-max, in float64 numpy."""
    pa = torch.softmax(actor_logits.double(), dim=1).numpy()
    pb = torch.softmax(action_logits.double(), dim=1).numpy()
    b, _, h, w = pa.shape
    out = np.zeros((b, h, w), dtype=np.uint8)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                bg = pa[n, 0, y, x] * (pb[n, 0, y, x] if background == "product" else 1.0)
                candidates = {0: bg}
                for pair in VALID_PAIRS:
                    candidates[pair] = pa[n, pair // 10, y, x] * pb[n, pair % 10, y, x]
                out[n, y, x] = max(candidates, key=candidates.get)
    return out


@pytest.mark.parametrize("background", ["product", "actor"])
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_joint_labels_equal_brute_force_argmax(background, scale):
    g = torch.Generator().manual_seed(int(scale))
    actor = torch.randn(2, 8, 7, 9, generator=g) * scale
    action = torch.randn(2, 10, 7, 9, generator=g) * scale
    labels = joint_labels(actor, action, background=background)
    assert labels.dtype == torch.uint8 and labels.shape == (2, 7, 9)
    np.testing.assert_array_equal(labels.numpy(), _brute_force(actor, action, background))


def test_never_outputs_an_invalid_pair():
    # Logits that favour invalid combinations: ball-eating (33), car-climbing (51), actor
    # background with action walking, adult with action background.
    actor = torch.full((4, 8, 3, 5), -10.0)
    action = torch.full((4, 10, 3, 5), -10.0)
    for n, (a, b) in enumerate([(3, 3), (5, 1), (0, 8), (1, 0)]):
        actor[n, a], action[n, b] = 10.0, 10.0
    g = torch.Generator().manual_seed(0)
    actor = torch.cat([actor, torch.randn(16, 8, 3, 5, generator=g) * 20])
    action = torch.cat([action, torch.randn(16, 10, 3, 5, generator=g) * 20])
    for background in ("product", "actor"):
        labels = joint_labels(actor, action, background=background)
        assert np.isin(labels.numpy(), JOINT_IDS).all()
        assert not np.isin(labels[:4].numpy(), [33, 51, 8, 10]).any()


def test_clear_cases_and_log_probs():
    actor = torch.zeros(1, 8, 2, 2)
    action = torch.zeros(1, 10, 2, 2)
    actor[0, 1, 0, 0], action[0, 8, 0, 0] = 9.0, 9.0  # adult-walking
    actor[0, 7, 1, 1], action[0, 7, 1, 1] = 9.0, 9.0  # dog-running
    actor[0, 0, 0, 1], action[0, 0, 0, 1] = 9.0, 9.0  # background
    labels = joint_labels(actor, action)
    assert labels[0, 0, 0] == 18 and labels[0, 1, 1] == 77 and labels[0, 0, 1] == 0
    log_p = joint_log_probs(actor, action)
    assert log_p.shape == (1, 44, 2, 2)
    # The 44 products are a sub-distribution of the 80 actor x action products.
    total = log_p.exp().sum(dim=1)
    assert (total <= 1 + 1e-6).all() and (total > 0).all()
    with pytest.raises(ValueError, match="channels"):
        joint_labels(actor[:, :7], action)
    with pytest.raises(ValueError, match="background"):
        joint_labels(actor, action, background="max")


def test_resizing_to_native_resolution():
    g = torch.Generator().manual_seed(1)
    actor, action = torch.randn(1, 8, 6, 8, generator=g), torch.randn(1, 10, 6, 8, generator=g)
    labels = joint_labels(actor, action, output_size=(45, 61))
    assert labels.shape == (1, 45, 61) and labels.dtype == torch.uint8
    expected = joint_labels(resize_logits(actor, (45, 61)), resize_logits(action, (45, 61)))
    assert torch.equal(labels, expected)
    assert resize_logits(actor, (6, 8)) is actor
    with pytest.raises(ValueError, match="sizes differ"):
        joint_labels(actor, action[..., :7])
