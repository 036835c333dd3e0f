"""Actors of the synthetic dataset: what each of the 7 A2D actor classes looks like.

An actor is a list of polygon parts in its own *local* frame: units of the actor's size ``s``
(pixels), origin at the actor's centre, x towards where it faces, y down. Parts depend on the
pose (leg swing, wing flap, head dip), so the action shows in how the shape changes over time,
not only in where it goes. Each class has its own silhouette, proportions, colour statistics and
texture; a :class:`Look` varies them within the class (size, aspect, hue, pattern).

Textures are evaluated in local coordinates, so they move and rotate with the actor (a rolling
ball's panels turn, a car's hubs spin): optical flow inside an actor is the actor's motion.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from pipeline.a2d.classes import ACTORS

#: Actor size ``s`` (pixels) as a fraction of the clip height, before the per-look jitter.
#: For upright actors (adult, baby) ``s`` is the height, for the others the body length.
SIZE = {"adult": 0.42, "baby": 0.24, "ball": 0.14, "bird": 0.22, "car": 0.44, "cat": 0.30,
        "dog": 0.36}
#: Lowest point of the standing shape, local units: where it touches the ground.
BOTTOM = {"adult": 0.47, "baby": 0.44, "ball": 0.5, "bird": 0.22, "car": 0.32, "cat": 0.3,
          "dog": 0.33}
#: Shapes that stand upright: crawling lays them down, climbing keeps them up.
UPRIGHT = ("adult", "baby")

# Colour roles of the parts (index into Look.colours).
PRIMARY, SECONDARY, SKIN, DARK, ACCENT = range(5)


@dataclass(frozen=True)
class Pose:
    """Pose of an actor in one frame, in screen pixels.

    ``phase`` drives legs, arms and wheels (radians); ``flap`` in [-1, 1] opens the wings (0 =
    folded); ``bend`` in [0, 1] dips the head (eating); ``squash`` scales the height.
    """

    x: float
    y: float
    angle: float = 0.0
    squash: float = 1.0
    phase: float = 0.0
    flap: float = 0.0
    bend: float = 0.0


@dataclass(frozen=True)
class Look:
    """Appearance of one actor instance.

    Attributes:
        actor: class name, one of ``ACTORS``.
        size: ``s`` in pixels.
        aspect: width multiplier (thin / stout variants of the class).
        facing: +1 faces right, -1 left.
        colours: (5, 3) float32 RGB in [0, 255] per colour role.
        pattern: texture of the primary parts ("flat", "stripes", "spots", "sectors").
        freq: spatial frequency of stripes / sectors (cycles per local unit or per turn).
        spots: (K, 3) float32 spot centres (u, v) and radius, local units.
        name: colour word for the A2D-Sentences query ("red", "grey", ...).
    """

    actor: str
    size: float
    aspect: float
    facing: int
    colours: np.ndarray
    pattern: str
    freq: float
    spots: np.ndarray
    name: str


# Class colour statistics: (hue range, saturation range, value range) of the primary colour,
# hues in [0, 1). Named hue buckets give the query's colour word.
_PRIMARY = {
    "adult": ((0.0, 1.0), (0.35, 0.85), (0.35, 0.9)),   # clothes: any hue
    "baby": ((0.0, 1.0), (0.12, 0.35), (0.82, 1.0)),    # pastel clothes
    "ball": ((0.0, 1.0), (0.75, 1.0), (0.75, 1.0)),     # saturated toy colours
    "bird": ((0.02, 0.12), (0.2, 0.6), (0.2, 0.55)),    # browns and greys, re-hued below
    "car": ((0.0, 1.0), (0.5, 0.95), (0.3, 0.95)),      # paint
    "cat": ((0.05, 0.1), (0.0, 0.75), (0.25, 0.95)),    # ginger, grey, black, cream
    "dog": ((0.06, 0.12), (0.25, 0.7), (0.2, 0.85)),    # brown, golden, black
}
_PATTERNS = {
    "adult": ("flat", "stripes"), "baby": ("flat", "spots"), "ball": ("sectors", "spots"),
    "bird": ("stripes", "flat"), "car": ("flat",), "cat": ("stripes", "stripes", "flat"),
    "dog": ("spots", "flat"),
}
_SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66],
                  [141, 85, 36], [92, 56, 30]], dtype=np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def colour_name(rgb: np.ndarray) -> str:
    """A plain colour word for an RGB colour (for the generated referring expressions)."""
    h, s, v = colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255))
    if v < 0.25:
        return "black"
    if s < 0.2:
        return "white" if v > 0.8 else "grey"
    if 0.04 < h < 0.11 and v < 0.65:
        return "brown"
    names = ((0.04, "red"), (0.11, "orange"), (0.19, "yellow"), (0.45, "green"), (0.54, "cyan"),
             (0.72, "blue"), (0.83, "purple"), (0.95, "pink"), (1.01, "red"))
    return next(n for edge, n in names if h < edge)


def sample_look(actor: str, rng: np.random.Generator, height: int, scale: float = 1.0) -> Look:
    """Draw one instance of class ``actor`` for a clip ``height`` pixels high, ``scale`` times
    the class's nominal size."""
    (h0, h1), (s0, s1), (v0, v1) = _PRIMARY[actor]
    if actor == "bird" and rng.random() < 0.35:  # some bright birds: blue jays, cardinals
        h0, h1, s0, s1, v0, v1 = 0.0, 1.0, 0.6, 0.9, 0.5, 0.9
    primary = _hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))
    secondary = {
        "adult": _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.45)),
        "baby": _hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.3), rng.uniform(0.85, 1.0)),
        "ball": _hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.9, 1.0)),
        "car": _hsv(0.58, 0.05, rng.uniform(0.15, 0.3)),
    }.get(actor, primary * rng.uniform(0.45, 0.7))
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.92, 1.05)
    dark = np.full(3, rng.uniform(15, 45), np.float32)
    accent = {
        "bird": _hsv(rng.uniform(0.07, 0.13), 0.9, 0.95),          # beak
        "car": _hsv(rng.uniform(0.5, 0.6), 0.35, rng.uniform(0.55, 0.8)),  # glass
        "dog": primary * 0.5, "cat": _hsv(0.97, 0.4, 0.9),          # ears / nose
    }.get(actor, skin)
    colours = np.clip(np.stack([primary, secondary, skin, dark, accent]), 0, 255)
    pattern = _PATTERNS[actor][rng.integers(len(_PATTERNS[actor]))]
    n_spots = int(rng.integers(3, 7))
    spots = np.stack([rng.uniform(-0.35, 0.35, n_spots), rng.uniform(-0.2, 0.2, n_spots),
                      rng.uniform(0.05, 0.11, n_spots)], axis=1).astype(np.float32)
    size = SIZE[actor] * height * scale * rng.uniform(0.8, 1.2)
    return Look(actor=actor, size=float(size), aspect=float(rng.uniform(0.85, 1.15)),
                facing=int(rng.choice((-1, 1))), colours=colours.astype(np.float32),
                pattern=pattern, freq=float(rng.uniform(5, 9)), spots=spots,
                name=colour_name(primary))


# ----------------------------------------------------------------------------- shape primitives
def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _limb(x: float, y: float, length: float, width: float, angle: float) -> np.ndarray:
    """A rectangle hanging from joint (x, y), swung by ``angle`` (0 = straight down)."""
    d = np.array([np.sin(angle), np.cos(angle)])
    n = np.array([d[1], -d[0]]) * width / 2
    a, b = np.array([x, y]), np.array([x, y]) + d * length
    return np.stack([a + n, b + n, b - n, a - n])


def _poly(*pts: tuple[float, float]) -> np.ndarray:
    return np.array(pts, dtype=np.float64)


# A part: (polygon (K, 2) local units, colour role, textured?). Later parts are drawn on top.
Part = tuple[np.ndarray, int, bool]


def _adult(p: Pose, look: Look) -> list[Part]:
    swing = 0.45 * np.sin(p.phase)
    head_y = -0.41 + 0.08 * p.bend
    return [
        (_limb(-0.05, 0.03, 0.44, 0.08, -swing), SECONDARY, False),
        (_limb(0.08, -0.27, 0.3, 0.055, swing), SKIN, False),
        (_ellipse(0.0, -0.13, 0.13, 0.21), PRIMARY, True),
        (_limb(0.05, 0.03, 0.44, 0.08, swing), SECONDARY, False),
        (_limb(-0.08, -0.27, 0.3, 0.055, -swing), SKIN, False),
        (_ellipse(0.02 + 0.05 * p.bend, head_y, 0.085, 0.095), SKIN, False),
        (_ellipse(0.0, head_y - 0.06, 0.085, 0.045), DARK, False),  # hair
    ]


def _baby(p: Pose, look: Look) -> list[Part]:
    swing = 0.5 * np.sin(p.phase)
    return [
        (_limb(-0.08, 0.18, 0.25, 0.12, -swing), SKIN, False),
        (_limb(0.08, 0.18, 0.25, 0.12, swing), SKIN, False),
        (_ellipse(0.0, 0.06, 0.21, 0.22), PRIMARY, True),
        (_limb(-0.17, -0.06, 0.2, 0.09, -0.9 - swing), SKIN, False),
        (_limb(0.17, -0.06, 0.2, 0.09, 0.9 + swing), SKIN, False),
        (_ellipse(0.03 * p.bend, -0.27 + 0.06 * p.bend, 0.19, 0.18), SKIN, False),
    ]


def _ball(p: Pose, look: Look) -> list[Part]:
    return [(_ellipse(0.0, 0.0, 0.5, 0.5, n=28), PRIMARY, True)]


def _bird(p: Pose, look: Look) -> list[Part]:
    hx, hy = 0.3 + 0.08 * p.bend, -0.1 + 0.22 * p.bend
    parts = [
        (_limb(-0.03, 0.1, 0.13, 0.03, 0.2), DARK, False),
        (_limb(0.05, 0.1, 0.13, 0.03, -0.2), DARK, False),
        (_poly((-0.25, 0.0), (-0.55, -0.06), (-0.55, 0.14), (-0.25, 0.1)), SECONDARY, False),
        (_ellipse(0.0, 0.03, 0.32, 0.15), PRIMARY, True),
        (_poly((hx + 0.09, hy - 0.03), (hx + 0.25, hy + 0.02), (hx + 0.09, hy + 0.05)), ACCENT,
         False),
        (_ellipse(hx, hy, 0.12, 0.11), PRIMARY, False),
        (_ellipse(hx + 0.05, hy - 0.03, 0.025, 0.025), DARK, False),
    ]
    if abs(p.flap) > 0.05:  # open wing: a triangle hinged on the back, tip up or down
        tip = (-0.12, -0.03 - 0.5 * p.flap)
        parts.append((_poly((-0.18, -0.04), (0.14, -0.04), tip), SECONDARY, False))
    else:
        parts.append((_ellipse(-0.05, 0.0, 0.2, 0.08), SECONDARY, False))
    return parts


def _car(p: Pose, look: Look) -> list[Part]:
    return [
        (_poly((-0.28, -0.04), (0.26, -0.04), (0.15, -0.27), (-0.2, -0.27)), PRIMARY, True),
        (_poly((-0.22, -0.06), (0.21, -0.06), (0.13, -0.23), (-0.17, -0.23)), ACCENT, False),
        (_poly((-0.5, -0.06), (0.5, -0.06), (0.52, 0.2), (-0.5, 0.2)), PRIMARY, True),
        (_ellipse(0.46, 0.02, 0.035, 0.03), ACCENT, False),  # headlight
        (_ellipse(-0.3, 0.2, 0.12, 0.12), DARK, False),
        (_ellipse(0.3, 0.2, 0.12, 0.12), DARK, False),
        (_ellipse(-0.3, 0.2, 0.06, 0.06), SKIN, True),  # hubs: sector texture shows the spin
        (_ellipse(0.3, 0.2, 0.06, 0.06), SKIN, True),
    ]


def _quadruped(p: Pose, look: Look, dog: bool) -> list[Part]:
    swing = 0.5 * np.sin(p.phase)
    leg_w, leg_l = (0.08, 0.24) if dog else (0.05, 0.22)
    hx, hy = (0.36, -0.14) if dog else (0.33, -0.12)
    hy += 0.2 * p.bend
    hx += 0.04 * p.bend
    parts = [
        (_limb(-0.2, 0.05, leg_l, leg_w, -swing), SECONDARY, False),
        (_limb(0.18, 0.05, leg_l, leg_w, swing), SECONDARY, False),
        (_limb(-0.28, -0.02, 0.2 if dog else 0.32, 0.05, -2.3 if dog else -2.6), PRIMARY, False),
        (_ellipse(0.0, 0.0, 0.33 if dog else 0.3, 0.15 if dog else 0.13), PRIMARY, True),
        (_limb(-0.16, 0.05, leg_l, leg_w, swing), PRIMARY, False),
        (_limb(0.22, 0.05, leg_l, leg_w, -swing), PRIMARY, False),
    ]
    if dog:
        parts += [
            (_poly((hx, hy - 0.06), (hx + 0.22, hy - 0.02), (hx + 0.22, hy + 0.07),
                   (hx, hy + 0.08)), PRIMARY, False),  # snout
            (_ellipse(hx, hy, 0.13, 0.12), PRIMARY, False),
            (_ellipse(hx - 0.06, hy + 0.04, 0.05, 0.11), ACCENT, False),  # floppy ear
            (_ellipse(hx + 0.22, hy, 0.03, 0.03), DARK, False),
        ]
    else:
        parts += [
            (_poly((hx - 0.1, hy - 0.05), (hx - 0.07, hy - 0.2), (hx - 0.01, hy - 0.08)), PRIMARY,
             False),  # pointed ears
            (_poly((hx + 0.01, hy - 0.08), (hx + 0.07, hy - 0.2), (hx + 0.1, hy - 0.05)), PRIMARY,
             False),
            (_ellipse(hx, hy, 0.11, 0.1), PRIMARY, True),
            (_ellipse(hx + 0.05, hy - 0.02, 0.022, 0.025), DARK, False),
            (_ellipse(hx + 0.1, hy + 0.03, 0.02, 0.015), ACCENT, False),
        ]
    return parts


_BUILDERS = {
    "adult": _adult, "baby": _baby, "ball": _ball, "bird": _bird, "car": _car,
    "cat": lambda p, look: _quadruped(p, look, dog=False),
    "dog": lambda p, look: _quadruped(p, look, dog=True),
}
assert set(_BUILDERS) == set(ACTORS)


def parts(look: Look, pose: Pose) -> list[Part]:
    """The actor's polygons for ``pose``, local units, back to front."""
    return _BUILDERS[look.actor](pose, look)


def texture(look: Look, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Multiplicative shading of textured parts at local coordinates ``(u, v)``.

    Args:
        u, v: (K,) float local coordinates of the pixels.
        phase: the pose phase (turns wheel hubs with the wheels).

    Returns:
        (K, 2) float32: column 0 the brightness factor, column 1 the weight of the secondary
        colour (sector / spot patterns swap colours rather than only shading).
    """
    shade = 1.08 - 0.25 * (v + 0.5)  # lit from above
    mix = np.zeros_like(u)
    if look.actor == "car":
        # Hubs spin with the wheels: spokes as 5 angular sectors around the hub centre.
        hub_u = np.where(u < 0, u + 0.3, u - 0.3)
        ang = np.arctan2(v - 0.2, hub_u) - phase
        spokes = np.cos(5 * ang) > 0.3
        shade = np.where((v > 0.12) & spokes, shade * 0.55, shade)
        shade = shade + 0.18 * np.exp(-((v + 0.02) / 0.04) ** 2)  # specular strip along the body
    elif look.pattern == "stripes":
        shade = shade * (1.0 - 0.28 * (np.sin(2 * np.pi * look.freq * u) > 0.2))
    elif look.pattern == "sectors":
        ang = np.arctan2(v, u)
        mix = (np.cos(round(look.freq) * ang) > 0).astype(np.float64)
    elif look.pattern == "spots":
        d = (u[:, None] - look.spots[:, 0]) ** 2 + (v[:, None] - look.spots[:, 1]) ** 2
        mix = (d < look.spots[:, 2] ** 2).any(axis=1).astype(np.float64)
    return np.stack([shade, mix], axis=1).astype(np.float32)
