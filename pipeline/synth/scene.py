"""One synthetic clip: textured background, panning camera, 1-3 actors in depth order, noise.

The scene lives in world pixels on a background canvas wider than the frame; the camera pans
across it (``cam[t]`` = world x of the frame's left edge). Actors are drawn back to front, so
the ground truth follows the depth order: the label map holds the pair of the front-most actor
at each pixel and each instance mask holds only the actor's *visible* pixels.

Background clutter (blocks, poles, blobs) uses colours drawn from the same ranges as the
actors, so colour alone does not segment an actor; the clutter is static in the world and
moves with the pan, so motion relative to the background does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.a2d.classes import ACTIONS, ACTORS
from pipeline.synth.appearance import Look, Pose, parts, sample_look, texture
from pipeline.synth.motion import Track, sample_track

_SHIFT = 4  # cv2 sub-pixel bits for polygon vertices


@dataclass(frozen=True)
class Actor:
    """One actor instance of a clip: its pair, appearance and world track."""

    label: int
    look: Look
    track: Track


@dataclass(frozen=True)
class Scene:
    """A clip before rendering.

    Attributes:
        height, width: frame size.
        canvas: (height, Wc, 3) float32 RGB background in world pixels, Wc >= width.
        cam: (T,) float64 world x of the frame's left edge per frame; ``shake`` (T,) its y.
        actors: instances in the order of their instance ids (the main actor first).
        depth: instance indices from back to front.
        gain, bias, noise: sensor model: ``gain * image + bias + N(0, noise)``.
    """

    height: int
    width: int
    canvas: np.ndarray
    cam: np.ndarray
    shake: np.ndarray
    actors: tuple[Actor, ...]
    depth: tuple[int, ...]
    gain: float
    bias: float
    noise: float
    blur: float

    @property
    def frames(self) -> int:
        return len(self.cam)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(h, w) float32 value noise in [-1, 1] with features about ``cell`` pixels wide."""
    grid = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 RGB: sky/wall over ground, multi-scale texture and static clutter."""
    horizon = int(rng.uniform(0.3, 0.65) * h)
    top = rng.uniform(60, 230, 3)
    ground = rng.uniform(40, 180, 3) * np.array([1.0, rng.uniform(0.8, 1.2), 0.8])
    img = np.empty((h, w, 3), np.float32)
    ramp = np.linspace(0.85, 1.1, horizon)[:, None, None]
    img[:horizon] = top * ramp
    img[horizon:] = ground
    texture_amp = rng.uniform(8, 25)
    for cell in (3, 7, 17):
        img += (texture_amp * _smooth_noise(rng, h, w, cell))[..., None] * rng.uniform(0.6, 1.2, 3)
    for _ in range(int(rng.integers(3, 9))):
        colour = sample_look(ACTORS[rng.integers(len(ACTORS))], rng, h).colours[0]
        colour = tuple(float(c) for c in colour * rng.uniform(0.7, 1.0))
        kind = rng.integers(3)
        cx, cy = rng.uniform(0, w), rng.uniform(0.1, 1.0) * h
        if kind == 0:  # building / furniture block standing on the horizon
            bw, bh = rng.uniform(0.1, 0.35) * h, rng.uniform(0.15, 0.5) * h
            cv2.rectangle(img, (int(cx), int(horizon - bh)), (int(cx + bw), horizon), colour, -1)
        elif kind == 1:  # pole / tree trunk / wall edge
            x1 = int(cx + rng.uniform(2, 0.08 * h))
            cv2.rectangle(img, (int(cx), 0), (x1, int(cy)), colour, -1)
        else:  # bush / rock
            axes = (int(rng.uniform(0.05, 0.2) * h), int(rng.uniform(0.04, 0.12) * h))
            cv2.ellipse(img, (int(cx), int(cy)), axes, 0, 0, 360, colour, -1)
    return np.clip(img, 0, 255)


def _fit(path: np.ndarray, width: int, margin: float) -> tuple[float, float]:
    """Range of start offsets x0 keeping ``x0 + path`` within [margin, width - margin]."""
    lo, hi = margin - path.min(), width - margin - path.max()
    return (lo, hi) if lo <= hi else ((lo + hi) / 2, (lo + hi) / 2)


def plan_scene(rng: np.random.Generator, labels: list[int], height: int, width: int, frames: int,
               pan: float, noise: float, actor_scale: float = 1.0) -> Scene:
    """Draw a clip with one actor per entry of ``labels`` (the first is the main actor).

    The camera pans at up to ``pan`` clip heights per frame and follows the main actor just
    enough to keep its whole path in view, as a camera operator would.
    """
    looks = [sample_look(ACTORS[lab // 10 - 1], rng, height, actor_scale) for lab in labels]
    tracks = [sample_track(ACTIONS[lab % 10 - 1], lk, rng, frames, height)
              for lab, lk in zip(labels, looks)]
    t = np.arange(frames, dtype=np.float64)
    jitter = np.cumsum(rng.normal(0, 0.05 * pan * height, frames))  # hand-held unsteadiness
    cam = rng.uniform(-pan, pan) * height * t + jitter
    main = tracks[0].x - cam
    margin = 0.35 * looks[0].size
    room = max(width - 2 * margin, 1.0)
    if np.ptp(main) > room:  # follow: shrink the main actor's screen path to what fits
        squeeze = room / np.ptp(main)
        cam = cam + (1 - squeeze) * (main - main[0])
    cam = cam - cam.min() + 2.0  # canvas starts 2 px left of the leftmost view
    canvas_w = int(np.ceil(cam.max())) + width + 4
    placed = []
    for i, (lk, tr) in enumerate(zip(looks, tracks)):
        screen = tr.x - cam
        # Secondary actors may walk out of view; the main actor stays fully visible in x.
        lo, hi = _fit(screen, width, margin if i == 0 else -0.1 * lk.size)
        placed.append(Actor(labels[i], lk, tr.shifted(rng.uniform(lo, hi))))
    depth = tuple(int(i) for i in rng.permutation(len(labels)))
    shake = rng.normal(0, 0.15, frames) if pan > 0 else np.zeros(frames)
    return Scene(height=height, width=width, canvas=_background(rng, height, canvas_w),
                 cam=cam, shake=shake, actors=tuple(placed), depth=depth,
                 gain=float(rng.uniform(0.85, 1.1)), bias=float(rng.uniform(-12, 12)),
                 noise=float(noise), blur=float(rng.uniform(0.4, 0.8)))


def draw_actor(look: Look, pose: Pose, height: int, width: int
               ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Rasterise one actor at a screen pose.

    Returns:
        ``(window, mask, rgb)``: the (row, col) slices of the frame it covers, its (h, w) bool
        mask and (h, w, 3) float32 colours inside that window; None when it is off screen.
    """
    s = look.size
    c, sn = np.cos(pose.angle), np.sin(pose.angle)
    # local (u, v) -> screen: scale (facing * aspect, squash), rotate, translate.
    lin = np.array([[c, -sn], [sn, c]]) @ np.diag([look.facing * look.aspect * s, pose.squash * s])
    polys = [(poly @ lin.T + (pose.x, pose.y), role, tex) for poly, role, tex in parts(look, pose)]
    pts = np.concatenate([p for p, _, _ in polys])
    x0, y0 = max(int(np.floor(pts[:, 0].min())) - 1, 0), max(int(np.floor(pts[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    index = np.zeros((y1 - y0, x1 - x0), np.int32)
    for k, (poly, _, _) in enumerate(polys, start=1):
        # pixel (i, j) covers [j, j+1) x [i, i+1): its centre is at j + 0.5
        vert = np.round((poly - (x0 - 0.5, y0 - 0.5)) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(index, [vert], k, lineType=cv2.LINE_8, shift=_SHIFT)
    mask = index > 0
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    screen = np.stack([cols + x0 + 0.5 - pose.x, rows + y0 + 0.5 - pose.y], axis=1)
    u, v = (screen @ np.linalg.inv(lin).T).T
    colours = look.colours
    base = np.stack([colours[polys[k - 1][1]] for k in range(1, len(polys) + 1)])[index[mask] - 1]
    textured = np.array([tex for _, _, tex in polys])[index[mask] - 1]
    tx = texture(look, u, v, pose.phase)
    shade = np.where(textured, tx[:, 0], 1.08 - 0.25 * (v + 0.5))
    mix = np.where(textured, tx[:, 1], 0.0)[:, None]
    rgb = np.zeros((*mask.shape, 3), np.float32)
    rgb[mask] = (base * (1 - mix) + colours[1] * mix) * shade[:, None]
    return (slice(y0, y1), slice(x0, x1)), mask, rgb


def render(scene: Scene, t: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render frame index ``t`` (0-based).

    Returns:
        image: (H, W, 3) uint8 RGB, with blur, gain/bias and sensor noise from ``rng``.
        label: (H, W) uint8 joint ids of the front-most actor (0 = background).
        masks: (N, H, W) bool visible pixels of each actor, N = len(scene.actors), in instance
            order (an actor out of view or fully hidden has an empty mask).
    """
    H, W = scene.height, scene.width
    m = np.float32([[1, 0, scene.cam[t]], [0, 1, scene.shake[t]]])
    img = cv2.warpAffine(scene.canvas, m, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT)
    label = np.zeros((H, W), np.uint8)
    owner = np.full((H, W), -1, np.int64)
    for i in scene.depth:  # back to front: nearer actors overwrite
        actor = scene.actors[i]
        pose = actor.track.pose(t, dx=-scene.cam[t], dy=-scene.shake[t])
        drawn = draw_actor(actor.look, pose, H, W)
        if drawn is None:
            continue
        window, mask, rgb = drawn
        img[window][mask] = rgb[mask]
        label[window][mask] = actor.label
        owner[window][mask] = i
    masks = owner[None] == np.arange(len(scene.actors))[:, None, None]
    img = cv2.GaussianBlur(img, (0, 0), scene.blur)  # optics: no pixel-sharp class edges
    img = scene.gain * img + scene.bias + rng.normal(0, scene.noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), label, masks
