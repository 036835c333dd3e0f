"""A2D classes, the 43 valid actor-action pairs and the official colour palette.

Labels follow the release: ``label = 10 * actor + action``, background = 0. See
``shared/docs/a2d-format.md`` section 5.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

ACTORS: tuple[str, ...] = ("adult", "baby", "ball", "bird", "car", "cat", "dog")
ACTIONS: tuple[str, ...] = (
    "climbing", "crawling", "eating", "flying", "jumping", "rolling", "running", "walking", "none",
)
NUM_ACTORS = len(ACTORS)  # 7, ids 1..7
NUM_ACTIONS = len(ACTIONS)  # 9, ids 1..9

VALID_PAIRS: tuple[int, ...] = (
    11, 12, 13, 15, 16, 17, 18, 19,
    21, 22, 26, 28, 29,
    34, 35, 36, 39,
    41, 43, 44, 45, 46, 48, 49,
    54, 55, 56, 57, 59,
    61, 63, 65, 66, 67, 68, 69,
    72, 73, 75, 76, 77, 78, 79,
)
assert len(VALID_PAIRS) == 43

# Joint classes of the evaluation: background first, then the valid pairs in id order.
JOINT_IDS: tuple[int, ...] = (0,) + VALID_PAIRS

_PALETTE_ROWS = {
    1: [(52, 1, 1), (103, 1, 1), (154, 1, 1), (205, 1, 1), (255, 1, 1), (255, 51, 51),
        (255, 103, 103), (255, 154, 154), (255, 205, 205)],
    2: [(52, 46, 1), (103, 92, 1), (154, 138, 1), (205, 184, 1), (255, 230, 1), (255, 235, 51),
        (255, 240, 103), (255, 245, 154), (255, 250, 205)],
    3: [(11, 52, 1), (21, 103, 1), (31, 154, 1), (41, 205, 1), (52, 255, 1), (92, 255, 51),
        (133, 255, 103), (174, 255, 154), (215, 255, 205)],
    4: [(1, 52, 36), (1, 103, 72), (1, 154, 108), (1, 205, 143), (1, 255, 179), (51, 255, 194),
        (103, 255, 210), (154, 255, 225), (205, 255, 240)],
    5: [(1, 21, 52), (1, 41, 103), (1, 62, 154), (1, 82, 205), (1, 103, 255), (51, 133, 255),
        (103, 164, 255), (154, 194, 255), (205, 225, 255)],
    6: [(26, 1, 52), (52, 1, 103), (77, 1, 154), (103, 1, 205), (128, 1, 255), (154, 51, 255),
        (179, 103, 255), (205, 154, 255), (230, 205, 255)],
    7: [(52, 1, 31), (103, 1, 62), (154, 1, 92), (205, 1, 123), (255, 1, 153), (255, 51, 174),
        (255, 103, 194), (255, 154, 215), (255, 205, 235)],
}

#: id -> (R, G, B) for background and all 63 actor-action ids, invalid pairs included.
PALETTE: dict[int, tuple[int, int, int]] = {0: (0, 0, 0)}
for _actor, _row in _PALETTE_ROWS.items():
    for _action, _rgb in enumerate(_row, start=1):
        PALETTE[10 * _actor + _action] = _rgb
assert len(PALETTE) == 64 and len(set(PALETTE.values())) == 64


def actor_name(actor_id: int) -> str:
    return "background" if actor_id == 0 else ACTORS[actor_id - 1]


def action_name(action_id: int) -> str:
    return "background" if action_id == 0 else ACTIONS[action_id - 1]


def pair_name(label: int) -> str:
    """``11 -> 'adult-climbing'``, ``0 -> 'background'``."""
    if label == 0:
        return "background"
    return f"{actor_name(label // 10)}-{action_name(label % 10)}"


def encode(actor: np.ndarray | int, action: np.ndarray | int) -> np.ndarray | int:
    """Joint label ``10 * actor + action``; background where the actor is 0."""
    return np.where(np.asarray(actor) == 0, 0, 10 * np.asarray(actor) + np.asarray(action))


def decode(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a joint label map (any int dtype) into (actor, action) maps, both uint8."""
    label = np.asarray(label)
    return (label // 10).astype(np.uint8), (label % 10).astype(np.uint8)


def is_palette_id(label: np.ndarray) -> np.ndarray:
    """True where ``label`` is one of the 64 palette ids (background or any of the 63 pairs)."""
    label = np.asarray(label)
    return (label == 0) | ((label >= 11) & (label <= 79) & (label % 10 != 0))


def is_valid_label(label: np.ndarray) -> np.ndarray:
    """True where ``label`` is background or one of the 43 valid pairs (what GT may contain)."""
    return np.isin(np.asarray(label), JOINT_IDS)


# Lookup tables for vectorised colour <-> id conversion.
_ID_TO_RGB = np.zeros((80, 3), dtype=np.uint8)
for _id, _rgb in PALETTE.items():
    _ID_TO_RGB[_id] = _rgb
_RGB_KEYS = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in PALETTE.items()}


def label_to_rgb(label: np.ndarray) -> np.ndarray:
    """(H, W) int label map -> (H, W, 3) uint8 RGB image in the official palette.

    Raises ValueError on an id that has no palette colour.
    """
    label = np.asarray(label)
    bad = ~is_palette_id(label)
    if bad.any():
        raise ValueError(f"label ids without a palette colour: {sorted(np.unique(label[bad]).tolist())}")
    return _ID_TO_RGB[label.astype(np.int64)]


@lru_cache(maxsize=1)
def _rgb_lut() -> np.ndarray:
    # 2^24 entries (16 MiB): one lookup per pixel instead of np.unique over the image.
    lut = np.full(1 << 24, -1, dtype=np.int8)
    for key, i in _RGB_KEYS.items():
        lut[key] = i
    return lut


def rgb_to_label(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 label map through the palette.

    Raises ValueError listing up to five colours that are not in the palette.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    ids = _rgb_lut()[keys]
    bad = ids < 0
    if bad.any():
        off = [((int(k) >> 16) & 255, (int(k) >> 8) & 255, int(k) & 255)
               for k in np.unique(keys[bad])]
        raise ValueError(f"{len(off)} colour(s) outside the A2D palette, e.g. {off[:5]}")
    return ids.astype(np.uint8)


def joint_to_index(label: np.ndarray) -> np.ndarray:
    """Joint label map -> index into ``JOINT_IDS`` (0..43); -1 for invalid pairs."""
    lut = np.full(80, -1, dtype=np.int64)
    lut[list(JOINT_IDS)] = np.arange(len(JOINT_IDS))
    return lut[np.asarray(label).astype(np.int64)]
