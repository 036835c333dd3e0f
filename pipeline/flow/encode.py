"""Flow encodings fed to the models, computed on read from the cached (dx, dy) field.

- :func:`flow_to_xym`: Ji et al. 2018, section 3.2: "a tensor of three channels with the x and y
  coordinates and the magnitude of flow". Scaled by ``1 / XYM_SCALE_PX`` so that typical A2D
  motion (a few to ~20 px between frames at 320 px height) gives values of order 1.
- :func:`flow_to_rgb`: Dang et al. 2018, section 3.2: flow "converted into an RGB image", with
  the Middlebury colour wheel (Baker et al., IJCV 2011): hue = direction, saturation =
  magnitude, white = no motion.

Both are pure numpy (no ptlflow import: that costs seconds and 400 MB per process) and accept
any leading batch dimensions.
"""

from __future__ import annotations

import numpy as np

#: Pixels of motion that map to 1.0 in :func:`flow_to_xym`.
XYM_SCALE_PX = 20.0


def flow_to_xym(flow: np.ndarray, scale_px: float = XYM_SCALE_PX) -> np.ndarray:
    """(..., H, W, 2) flow in pixels -> (..., H, W, 3) float32 ``(dx, dy, |flow|) / scale_px``."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape[-1] != 2:
        raise ValueError(f"flow must end with 2 channels (dx, dy), got shape {flow.shape}")
    mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
    return np.concatenate([flow, mag[..., None]], axis=-1) / np.float32(scale_px)


def _colour_wheel() -> np.ndarray:
    """(55, 3) float32 Middlebury colour wheel, RGB 0..255 (``computeColor.m``)."""
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    segments = [  # (length, channel that changes, rising?), starting from pure red
        (ry, 1, True), (yg, 0, False), (gc, 2, True), (cb, 1, False), (bm, 0, True), (mr, 2, False),
    ]
    wheel = []
    rgb = np.array([255.0, 0.0, 0.0])
    for length, channel, rising in segments:
        for i in range(length):
            c = rgb.copy()
            c[channel] = np.floor(255 * i / length) if rising else 255 - np.floor(255 * i / length)
            wheel.append(c)
        rgb = c.copy()
        rgb[channel] = 255.0 if rising else 0.0
    return np.asarray(wheel, dtype=np.float32)


_WHEEL = _colour_wheel()


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(..., H, W, 2) flow in pixels -> (..., H, W, 3) uint8 Middlebury colour image.

    Args:
        flow: (dx, dy) in pixels.
        max_magnitude: motion (px) shown at full saturation; larger motion saturates. None
            normalises each image by its own largest motion (the Middlebury and ptlflow
            convention), which shows direction well but loses absolute speed.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape[-1] != 2:
        raise ValueError(f"flow must end with 2 channels (dx, dy), got shape {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    rad = np.sqrt(u ** 2 + v ** 2)
    if max_magnitude is None:
        # per image: reduce over (H, W) only, keep leading batch dimensions
        norm = rad.max(axis=(-2, -1), keepdims=True) if rad.size else np.float32(1)
    else:
        norm = np.float32(max_magnitude)
    rad = rad / np.maximum(norm, np.float32(1e-6))
    n = len(_WHEEL)
    angle = np.arctan2(-v, -u) / np.pi  # -1..1; +x (rightward) lands on wheel index 0, red
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = (1 - f) * _WHEEL[k0] / 255 + f * _WHEEL[k1] / 255
    r = rad[..., None]
    inside = r <= 1
    # desaturate towards white with decreasing speed; beyond the range, darken the colour
    col = np.where(inside, 1 - r * (1 - col), col * 0.75)
    return np.clip(np.floor(255 * col), 0, 255).astype(np.uint8)
