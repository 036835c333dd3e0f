"""Target checks, the 43 actor-action pair classes of the Mask R-CNN baseline, and zero-shot
label masking (Ji et al. 2018, section 4.4).

Targets follow the input contract of :mod:`pipeline.e2e`: one dict per clip, for its centre
(annotated) frame, with ``boxes`` (N, 4) float32, ``actor`` (N,) int64 1..7, ``action`` (N,)
int64 1..9 or :data:`IGNORE_ACTION`, ``masks`` (N, H, W) uint8.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.a2d.classes import NUM_ACTIONS, NUM_ACTORS, VALID_PAIRS

__all__ = [
    "IGNORE_ACTION", "NUM_PAIR_CLASSES", "check_targets", "pair_to_class", "class_to_pair",
    "mask_action_labels", "valid_action_table",
]

#: Action label of an instance whose action must not be learned (the action loss skips it).
IGNORE_ACTION = -1
#: Foreground classes of the cross-product baseline: the 43 valid pairs, ids 1..43.
NUM_PAIR_CLASSES = len(VALID_PAIRS)

# joint id (0..79) -> pair class 1..43, 0 for invalid pairs
_PAIR_TO_CLASS = torch.zeros(80, dtype=torch.int64)
_PAIR_TO_CLASS[list(VALID_PAIRS)] = torch.arange(1, NUM_PAIR_CLASSES + 1)
_CLASS_TO_PAIR = torch.tensor((0,) + VALID_PAIRS, dtype=torch.int64)


def valid_action_table() -> Tensor:
    """(8, 10) bool: ``[actor, action]`` is True for the 43 valid pairs (row/column 0 unused)."""
    table = torch.zeros(NUM_ACTORS + 1, NUM_ACTIONS + 1, dtype=torch.bool)
    for pair in VALID_PAIRS:
        table[pair // 10, pair % 10] = True
    return table


def pair_to_class(actor: Tensor, action: Tensor) -> Tensor:
    """(N,) actor 1..7 and (N,) action 1..9 -> (N,) int64 pair class 1..43.

    Raises ValueError for an invalid pair or an ignored action: the cross-product baseline has
    no way to learn an instance without its action.
    """
    if ((action < 1) | (action > NUM_ACTIONS)).any():
        raise ValueError("the pair-class baseline needs an action (1..9) for every instance")
    cls = _PAIR_TO_CLASS.to(actor.device)[10 * actor + action]
    if (cls == 0).any():
        bad = sorted(set((10 * actor + action)[cls == 0].tolist()))
        raise ValueError(f"invalid actor-action pair(s) in targets: {bad}")
    return cls


def class_to_pair(cls: Tensor) -> tuple[Tensor, Tensor]:
    """(N,) pair class 1..43 -> ((N,) actor 1..7, (N,) action 1..9), both int64."""
    pair = _CLASS_TO_PAIR.to(cls.device)[cls]
    return pair // 10, pair % 10


def check_targets(targets: list[dict[str, Tensor]], sizes: list[tuple[int, int]]) -> None:
    """Raise ValueError unless every target follows the contract for a frame of ``sizes[i]``."""
    if len(targets) != len(sizes):
        raise ValueError(f"{len(targets)} targets for {len(sizes)} clips")
    for i, (t, (h, w)) in enumerate(zip(targets, sizes)):
        missing = {"boxes", "actor", "action", "masks"} - set(t)
        if missing:
            raise ValueError(f"target {i} lacks {sorted(missing)}")
        n = len(t["boxes"])
        if not t["boxes"].is_floating_point() or t["boxes"].shape != (n, 4):
            raise ValueError(f"target {i}: boxes must be (N, 4) float, got {tuple(t['boxes'].shape)}")
        for key in ("actor", "action"):
            if t[key].dtype != torch.int64 or t[key].shape != (n,):
                raise ValueError(f"target {i}: {key} must be ({n},) int64, got "
                                 f"{tuple(t[key].shape)} {t[key].dtype}")
        if ((t["actor"] < 1) | (t["actor"] > NUM_ACTORS)).any():
            raise ValueError(f"target {i}: actor ids must be 1..{NUM_ACTORS}")
        act = t["action"]
        if (((act < 1) | (act > NUM_ACTIONS)) & (act != IGNORE_ACTION)).any():
            raise ValueError(f"target {i}: action ids must be 1..{NUM_ACTIONS} or {IGNORE_ACTION}")
        if t["masks"].shape != (n, h, w):
            raise ValueError(f"target {i}: masks must be ({n}, {h}, {w}), got "
                             f"{tuple(t['masks'].shape)}")


def mask_action_labels(targets: list[dict[str, Tensor]], actor: int) -> list[dict[str, Tensor]]:
    """Zero-shot training targets: forget the action of every instance of ``actor``.

    The instances keep their boxes, masks and actor label (the actor branch still learns to
    find and segment them); their action becomes :data:`IGNORE_ACTION`, so the action loss is
    ``-1{x' != x} log p(y)`` as in Ji et al. eq. after (3). Returns new dicts; the input is not
    modified.
    """
    if not 1 <= actor <= NUM_ACTORS:
        raise ValueError(f"actor must be 1..{NUM_ACTORS}, got {actor}")
    out = []
    for t in targets:
        t = dict(t)
        t["action"] = torch.where(t["actor"] == actor, IGNORE_ACTION, t["action"])
        out.append(t)
    return out
