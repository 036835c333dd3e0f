r"""The region-to-pixel layer (Dang et al. 2018, Eq. 2-3; Caesar et al., ECCV 2016).

Each pixel takes, per class, the best score among the regions that contain it, so every pixel
of a region whose mask is 1 there carries the region's scores, and hence one label per region.

Score formulation
-----------------
Eq. 2 reads ``y_jk = max_{i: j in b_i} m_ij * s_ik`` and then a softmax over ``y_j``. Taken
literally with logits ``s`` this is unsound: logits have no fixed sign or offset, so for a
negative ``s_ik`` a *weaker* membership (smaller ``m_ij``) gives a *larger* product, and pixels
barely touched by a region get scores near 0 whatever the region says. The multiplication only
makes sense for non-negative scores. We apply Eq. 2 to the exponentiated scores and return its
logarithm, which feeds the softmax/cross-entropy directly::

    y_jk = log max_i (m_ij * exp(s_ik)) = max_{i: m_ij > t} (s_ik + log m_ij)

so ``softmax(y_j)_k`` is proportional to ``max_i m_ij exp(s_ik)``. Properties:

- with binary masks it is exactly Caesar et al.'s layer (max of the region logits over the
  regions containing the pixel);
- a region's influence decays smoothly with its mask probability (``log m`` is a class-
  independent offset, so inside one region the class ranking is the region's own);
- invariant to the usual logit shift: adding a constant to all scores shifts ``y`` by it;
- every pixel inside a region where ``m = 1`` and no other region competes gets exactly the
  region's scores (one label per region: the consistency the paper is about).

The max gives a subgradient: for each (class, pixel), the whole gradient goes to the arg-max
region's score (and mask value); ties go to one of the tied regions.

Pixels covered by no region
---------------------------
A pixel with ``m_ij <= mask_threshold`` for every region has no score under Eq. 2. The layer
writes ``fill`` there (default 0 for every class: uniform after the softmax, no gradient).
:class:`pipeline.models.region_head.RegionHead` avoids that case by design: it adds a *context
region* (the whole frame, mask 1 everywhere, scored by the same pooling + FC layers), so every
pixel is covered and uncovered pixels become background by learning. ``fill`` may also be a
(K, H, W) tensor, e.g. the baseline's logits there.

Memory
------
The dense ``(N, K, H, W)`` candidate tensor (31 regions x 10 classes x 320 x 568 = 56 M floats)
is never built: the maximum and its arg-max region are found without autograd, visiting only
the (region, pixel) pairs with ``m > t`` (sparse: instance masks are 0 outside their box), in
pixel chunks of at most ``max_chunk_elements`` candidates. When a gradient is needed the output
is rebuilt with two ``gather`` calls that autograd differentiates, so the graph holds (K, H*W)
indices, not (N, K, H*W) values; without one (inference) the maxima are returned directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["region_to_pixel", "region_to_pixel_reference"]


def _check(scores: Tensor, masks: Tensor) -> None:
    if scores.ndim != 2 or masks.ndim != 3 or scores.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected scores (N, K) and masks (N, H, W) with the same N, got "
            f"{tuple(scores.shape)} and {tuple(masks.shape)}"
        )
    if not masks.is_floating_point():
        raise TypeError(f"masks must be float probabilities in [0, 1], got {masks.dtype}")


def _log_masks(masks: Tensor, mask_threshold: float) -> tuple[Tensor, Tensor]:
    """(N, H, W) -> log m (N, H*W) with -inf where ``m <= t``, and inside (N, H*W) bool."""
    flat = masks.flatten(1)
    inside = flat > mask_threshold
    # clamp_min keeps log finite (and its gradient zero) where the mask is 0; those entries are
    # replaced by -inf anyway.
    log_m = torch.log(flat.clamp_min(torch.finfo(flat.dtype).tiny)).masked_fill(~inside, -torch.inf)
    return log_m, inside


@torch.no_grad()
def _max_over_regions(
    scores: Tensor, log_m: Tensor, inside: Tensor, max_chunk_elements: int, want_index: bool
) -> tuple[Tensor, Tensor | None]:
    """``max_i (s_ik + log m_ij)`` (K, P) (-inf if uncovered) and, if ``want_index``, the (K, P)
    int64 arg-max region (0 if uncovered; one of the tied regions on ties).

    Only (region, pixel) pairs inside a region are visited: instance masks cover a small part
    of the frame, so this is less work than the dense (N, K, P) maximum. Pixels are processed in
    chunks so that at most ``max_chunk_elements`` candidates exist at once.
    """
    n, k = scores.shape
    p = log_m.shape[1]
    scores_t = scores.t().contiguous()  # (K, N)
    best = torch.full((k, p), -torch.inf, dtype=scores.dtype, device=scores.device)
    index = torch.zeros(k, p, dtype=torch.long, device=scores.device) if want_index else None
    chunk = max(1, max_chunk_elements // (n * k))
    for start in range(0, p, chunk):
        stop = min(start + chunk, p)
        sub = inside[:, start:stop]  # (N, c)
        region, pixel = sub.nonzero(as_tuple=True)  # (E,), (E,) region-major
        if region.numel() == 0:
            continue
        candidates = scores_t.index_select(1, region) + log_m[:, start:stop][sub]  # (K, E)
        pixel = pixel.expand(k, -1)
        chunk_best = best[:, start:stop]
        chunk_best.scatter_reduce_(1, pixel, candidates, "amax")
        if index is not None:
            # Exact equality is safe: ``chunk_best`` holds copies of these very values.
            winner = torch.where(candidates == chunk_best.gather(1, pixel), region, -1)
            chunk_index = torch.full_like(chunk_best, -1, dtype=torch.long)
            chunk_index.scatter_reduce_(1, pixel, winner, "amax")
            index[:, start:stop] = chunk_index.clamp_min_(0)
    return best, index


def region_to_pixel(
    scores: Tensor,
    masks: Tensor,
    fill: float | Tensor = 0.0,
    mask_threshold: float = 0.0,
    max_chunk_elements: int = 1 << 24,
) -> Tensor:
    """Region scores -> pixel scores, ``y_jk = max_{i: m_ij > t} (s_ik + log m_ij)``.

    Args:
        scores: (N, K) float region logits (N may be 0).
        masks: (N, H, W) float region mask probabilities in [0, 1], same dtype and device.
        fill: pixel scores where no region has ``m > mask_threshold``: a float for all classes,
            or a tensor broadcastable to (K, H, W).
        mask_threshold: a pixel belongs to region i when ``m_ij > mask_threshold`` (0: wherever
            the mask is non-zero; region masks pasted into the frame are 0 outside their box,
            which is the ``j in b_i`` of Eq. 2).
        max_chunk_elements: at most this many (region, class, pixel) candidates are held at
            once (64 MiB in float32 by default); only memory, never the result, depends on it.

    Returns:
        (K, H, W) pixel logits, differentiable w.r.t. ``scores`` (and ``masks``, ``fill``).
    """
    _check(scores, masks)
    n, k = scores.shape
    h, w = masks.shape[1:]
    fill = torch.as_tensor(fill, dtype=scores.dtype, device=scores.device)
    if n == 0:
        return fill.expand(k, h, w).clone()
    log_m, inside = _log_masks(masks, mask_threshold)  # (N, P)
    covered = inside.any(dim=0)  # (P,)
    needs_grad = torch.is_grad_enabled() and (scores.requires_grad or masks.requires_grad)
    best, index = _max_over_regions(
        scores.detach(), log_m.detach(), inside, max_chunk_elements, want_index=needs_grad
    )
    if index is None:
        y = best
    else:
        # Rebuild the maxima from the arg-max: autograd sends each pixel's gradient to one region.
        y = scores.t().gather(1, index) + log_m.gather(0, index)  # (K, P)
    y = y.view(k, h, w)
    return torch.where(covered.view(1, h, w), y, fill)


def region_to_pixel_reference(
    scores: Tensor, masks: Tensor, fill: float | Tensor = 0.0, mask_threshold: float = 0.0
) -> Tensor:
    """Same result as :func:`region_to_pixel`, with an explicit loop over regions.

    For tests and ``benchmarks/region_to_pixel.py`` only: it keeps one (K, H, W) candidate per
    region in the autograd graph.
    """
    _check(scores, masks)
    n, k = scores.shape
    h, w = masks.shape[1:]
    fill = torch.as_tensor(fill, dtype=scores.dtype, device=scores.device)
    log_m, inside = _log_masks(masks, mask_threshold)
    y = torch.full((k, h, w), -torch.inf, dtype=scores.dtype, device=scores.device)
    for i in range(n):
        candidate = scores[i][:, None, None] + log_m[i].view(1, h, w)  # (K, H, W)
        y = torch.maximum(y, candidate)
    covered = inside.any(dim=0).view(1, h, w)
    return torch.where(covered, y, fill)
