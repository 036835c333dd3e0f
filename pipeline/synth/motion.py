"""Actions of the synthetic dataset: each of the 9 A2D actions is a way of moving over time.

A :class:`Track` is an actor's pose in every frame, in *world* pixels (the background's frame;
the camera pan is added by the scene). Speeds and heights scale with the clip height ``H`` so a
dataset looks the same at any resolution. What separates the actions (per frame, ``H = 96``):

==========  =================================================================================
running     fast horizontal translation (2.7-4 px), quick leg cycle, forward lean, bobbing
walking     slow horizontal translation (0.8-1.3 px), slow leg cycle, vertical bobbing
jumping     repeated vertical parabolas (hop height 0.15-0.3 H), little drift
rolling     rotation about the centre while translating, rolling without slipping
flying      smooth sinusoidal arcs in the top third, wings flapping
crawling    very slow (0.4-0.8 px), low in the frame; upright actors lie down
climbing    upward translation (0.8-1.4 px), limbs cycling; animals turn head-up
eating      in place; periodic head dip and squash (small deformation, no translation)
none        still: constant pose
==========  =================================================================================

The speed ranges of neighbouring actions do not overlap, and a single frame does not pin the
action down: position, lean and limb phase overlap between actions, their change over time not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.a2d.classes import ACTIONS
from pipeline.synth.appearance import BOTTOM, UPRIGHT, Look, Pose

#: Horizontal speed range per action, clip heights per frame.
SPEED = {"running": (0.028, 0.042), "walking": (0.008, 0.014), "crawling": (0.004, 0.008),
         "rolling": (0.014, 0.024), "flying": (0.018, 0.03), "jumping": (0.0, 0.006),
         "climbing": (0.0, 0.0), "eating": (0.0, 0.0), "none": (0.0, 0.0)}
CLIMB_SPEED = (0.008, 0.014)


@dataclass(frozen=True)
class Track:
    """Per-frame pose of one actor, world pixels.

    Attributes:
        x, y: (T,) float64 centre.
        angle: (T,) rotation, radians (screen y points down, positive = clockwise).
        squash: (T,) vertical scale factor.
        phase: (T,) limb / wheel phase, radians.
        flap: (T,) wing opening in [-1, 1], 0 = folded.
        bend: (T,) head dip in [0, 1].
    """

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    squash: np.ndarray
    phase: np.ndarray
    flap: np.ndarray
    bend: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def pose(self, t: int, dx: float = 0.0, dy: float = 0.0) -> Pose:
        """The pose at frame index ``t`` (0-based), shifted by (dx, dy) pixels."""
        return Pose(float(self.x[t] + dx), float(self.y[t] + dy), float(self.angle[t]),
                    float(self.squash[t]), float(self.phase[t]), float(self.flap[t]),
                    float(self.bend[t]))

    def shifted(self, dx: float) -> Track:
        return Track(self.x + dx, self.y, self.angle, self.squash, self.phase, self.flap, self.bend)


def sample_track(action: str, look: Look, rng: np.random.Generator, frames: int,
                 height: int) -> Track:
    """Draw the motion of ``look`` performing ``action`` for ``frames`` frames.

    ``x`` starts at 0 (the scene places the actor); ``y`` is absolute, in a clip ``height``
    pixels high, chosen so that the whole path stays inside the frame vertically.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    t = np.arange(frames, dtype=np.float64)
    H, s, f = float(height), look.size, look.facing
    zeros, ones = np.zeros(frames), np.ones(frames)
    v = rng.uniform(*SPEED[action]) * H * f  # signed horizontal speed, px / frame
    x = v * t
    angle = zeros.copy()
    squash, flap, bend = ones.copy(), zeros.copy(), zeros.copy()
    phase = np.full(frames, rng.uniform(0, 2 * np.pi))
    half = 0.5 * s * (1.0 if look.actor in UPRIGHT or look.actor == "ball" else 0.45)
    ground = rng.uniform(0.8, 0.97) * H
    y = np.full(frames, ground - BOTTOM[look.actor] * s)
    stride = 0.35 * s  # pixels per leg cycle

    if action in ("running", "walking"):
        phase = phase + 2 * np.pi * np.abs(v) / stride * t
        if look.actor != "car":  # legs bob the body and lean it forward; wheels don't
            bob = (0.02 if action == "running" else 0.012) * H
            y = y - bob * np.abs(np.sin(phase))
            angle = angle + f * (0.18 if action == "running" else 0.04)
    elif action == "jumping":
        period = rng.uniform(10, 16)
        hop = rng.uniform(0.15, 0.3) * H
        hop = min(hop, max(y[0] - half - 0.03 * H, 0.05 * H))  # apex stays inside the frame
        p = ((t + rng.uniform(0, period)) / period) % 1.0
        y = y - hop * 4 * p * (1 - p)
        squash = 1.0 - 0.12 * np.exp(-((np.minimum(p, 1 - p)) / 0.06) ** 2)  # landing squash
        phase = np.full(frames, 1.2)  # legs tucked, same pose in the air
    elif action == "rolling":
        radius = 0.5 * s if look.actor == "ball" else 0.3 * s
        angle = angle + rng.uniform(0, 2 * np.pi) + x / radius  # roll without slipping
        y = np.full(frames, ground - radius)
        phase = phase + x / radius
    elif action == "flying":
        y0 = rng.uniform(0.12, 0.3) * H
        amp = rng.uniform(0.03, 0.08) * H
        arc = 2 * np.pi * t / rng.uniform(16, 30) + rng.uniform(0, 2 * np.pi)
        y = y0 + half * 0.3 + amp * np.sin(arc)
        y = np.maximum(y, half + 1.0)
        flap = np.sin(2 * np.pi * t / rng.uniform(4, 7) + rng.uniform(0, 6.3))
        angle = np.arctan2(np.gradient(y), np.full(frames, abs(v) + 1e-6)) * 0.6 * f
        if look.actor == "ball":
            angle = angle + 0.15 * x / s  # a thrown ball spins
        if look.actor == "car":
            phase = phase + x / (0.12 * s)
    elif action == "crawling":
        phase = phase + 2 * np.pi * np.abs(v) / (0.2 * s) * t
        ground = rng.uniform(0.88, 0.98) * H
        if look.actor in UPRIGHT:  # lie down, head first, on all fours
            angle = np.full(frames, f * np.pi / 2 * 0.9)
            y = np.full(frames, ground - 0.2 * s)
        else:
            y = np.full(frames, ground - BOTTOM[look.actor] * s * 0.8)
            squash = np.full(frames, 0.8)
        y = y - 0.006 * H * np.abs(np.sin(phase))
    elif action == "climbing":
        vy = rng.uniform(*CLIMB_SPEED) * H
        rise = vy * (frames - 1)
        top = half + 0.03 * H
        y_start = min(max(y[0], top + rise), H - 0.3 * half)
        y = y_start - vy * t
        x = 0.01 * H * np.sin(2 * np.pi * t / rng.uniform(8, 14))  # hand over hand sway
        phase = phase + 2 * np.pi * vy / (0.25 * s) * t
        if look.actor not in UPRIGHT:
            angle = np.full(frames, -f * np.pi / 2 * 0.85)  # head up the wall or tree
    elif action == "eating":
        cycle = 2 * np.pi * t / rng.uniform(6, 10) + rng.uniform(0, 2 * np.pi)
        bend = 0.5 + 0.5 * np.sin(cycle)
        squash = 1.0 - 0.05 * (0.5 + 0.5 * np.sin(cycle))
    # "none": the constant pose set above.
    return Track(x=x, y=y, angle=angle, squash=squash, phase=phase, flap=flap, bend=bend)
