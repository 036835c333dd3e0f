"""The dataset plan: which videos exist, their size, split, ids, and which actor-action pairs
each one shows, decided before anything is rendered.

Balance, in order of priority:
1. Video-level labels (the main actor's pair) cycle through the actors as evenly as possible,
   then through each actor's valid actions.
2. The test split is taken evenly along that (actor, action) order, so it holds a spread of
   actors and actions, not a random clump.
3. Secondary actors take the pairs least used so far *within their video's split*, so every one
   of the 43 valid pairs occurs (in the training split first) once there are enough actor slots.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.a2d.classes import NUM_ACTORS, VALID_PAIRS

_ID_CHARS = string.ascii_letters + string.digits + "_-"


@dataclass(frozen=True)
class SynthConfig:
    """Section ``synthetic`` of config.yaml (defaults and meaning in the schema)."""

    enabled: bool
    videos: int
    seed: int
    height: int
    widths: tuple[int, ...]
    frames: tuple[int, int]
    annotated: int
    test_fraction: float
    fps: float
    max_actors: int
    pan: float
    noise: float
    instances: bool
    actor_scale: float

    def check(self) -> SynthConfig:
        """Raise ValueError on values the schema cannot express; return self."""
        if self.height % 2 or any(w % 2 for w in self.widths):
            # MPEG-4 needs even sizes: an odd size is silently cropped by one pixel on write.
            raise ValueError(f"synthetic: height {self.height} and widths {list(self.widths)} "
                             "must be even")
        lo, hi = self.frames
        if lo > hi:
            raise ValueError(f"synthetic.frames: min {lo} > max {hi}")
        if self.annotated > lo:
            raise ValueError(f"synthetic.annotated = {self.annotated} > shortest clip ({lo})")
        if self.seed < 0:
            raise ValueError(f"synthetic.seed must be >= 0, got {self.seed}")
        if self.videos < 2:
            raise ValueError("synthetic.videos must be >= 2 (one train and one test video)")
        return self


@dataclass(frozen=True)
class VideoPlan:
    """What one video will contain.

    Attributes:
        vid: 11-character YouTube-like id (may start with '-').
        labels: actor-action id of each actor; ``labels[0]`` is the main actor (the
            video-level label).
        width, frames: clip size and length.
        test: True for the test split.
        start: start time in seconds (for ``timestart``/``timeend``).
        seed: ``(config seed, video index)``, the entropy of the video's own generators, so
            videos are independent of each other (and could be rendered in any order).
    """

    vid: str
    labels: tuple[int, ...]
    width: int
    frames: int
    test: bool
    start: int
    seed: tuple[int, int]


def _video_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Unique 11-character ids over [A-Za-z0-9_-]; every fifth starts with '-', the first '--'
    (real A2D ids like ``--h5fAKYurM`` break naive shell and argparse handling)."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        i = len(ids)
        prefix = "--" if i == 0 else "-" if i % 5 == 0 else ""
        body = "".join(rng.choice(list(_ID_CHARS), 11 - len(prefix)))
        vid = prefix + body
        if vid.lstrip("-") and vid[len(prefix)] != "-" and vid not in seen:
            seen.add(vid)
            ids.append(vid)
    return ids


def _least_used(counts: dict[int, int], options: list[int], rng: np.random.Generator) -> int:
    low = min(counts[o] for o in options)
    ties = [o for o in options if counts[o] == low]
    return ties[int(rng.integers(len(ties)))]


def _main_labels(rng: np.random.Generator, n: int) -> list[int]:
    actor_count = {a: 0 for a in range(1, NUM_ACTORS + 1)}
    pair_count = {p: 0 for p in VALID_PAIRS}
    labels = []
    for _ in range(n):
        actor = _least_used(actor_count, list(actor_count), rng)
        pair = _least_used(pair_count, [p for p in VALID_PAIRS if p // 10 == actor], rng)
        actor_count[actor] += 1
        pair_count[pair] += 1
        labels.append(pair)
    return labels


def _test_flags(main: list[int], fraction: float, rng: np.random.Generator) -> list[bool]:
    """Evenly spaced picks along the videos sorted by actor, then by action in a random order
    (a fixed action order would put the same actions at the pick positions of every actor)."""
    n = len(main)
    n_test = min(max(round(n * fraction), 1), n - 1)
    action_rank = rng.permutation(10)
    order = sorted(range(n), key=lambda i: (main[i] // 10, action_rank[main[i] % 10], i))
    flags = [False] * n
    for rank, i in enumerate(order):
        # rank r is a test video when floor((r + 1) * k / n) steps up; offset centres the picks
        if ((rank + 1) * n_test + n // 2) // n > (rank * n_test + n // 2) // n:
            flags[i] = True
    return flags


def plan_dataset(cfg: SynthConfig) -> list[VideoPlan]:
    """The deterministic plan of the whole release for ``cfg``."""
    cfg.check()
    rng = np.random.default_rng((cfg.seed, cfg.videos))
    main = _main_labels(rng, cfg.videos)
    test = _test_flags(main, cfg.test_fraction, rng)
    # 1..max_actors actors per video in equal shares, in random order.
    n_actors = rng.permutation([1 + i % cfg.max_actors for i in range(cfg.videos)])
    counts = {split: {p: 0 for p in VALID_PAIRS} for split in (False, True)}
    for lab, is_test in zip(main, test):
        counts[is_test][lab] += 1
    actor_total = Counter(lab // 10 for lab in main)
    labels = []
    for lab, is_test, k in zip(main, test, n_actors):
        extra = []
        for _ in range(int(k) - 1):
            # least used pair; among those, the least used actor (adult has 8 pairs, ball 4)
            low = min(counts[is_test].values())
            rare = [p for p in VALID_PAIRS if counts[is_test][p] == low]
            fewest = min(actor_total[p // 10] for p in rare)
            ties = [p for p in rare if actor_total[p // 10] == fewest]
            pair = ties[int(rng.integers(len(ties)))]
            counts[is_test][pair] += 1
            actor_total[pair // 10] += 1
            extra.append(pair)
        labels.append((lab, *extra))
    ids = _video_ids(rng, cfg.videos)
    lo, hi = cfg.frames
    return [
        VideoPlan(vid=ids[i], labels=labels[i], width=int(rng.choice(cfg.widths)),
                  frames=int(rng.integers(lo, hi + 1)), test=test[i],
                  start=int(rng.integers(0, 600)), seed=(cfg.seed, i))
        for i in range(cfg.videos)
    ]


def annotated_frames(frames: int, count: int) -> list[int]:
    """``count`` evenly spaced 1-based frame ids of a ``frames``-long clip, centred in their
    segments (so neither the first nor the last frame, which lack temporal context)."""
    return [1 + int((k + 0.5) * frames / count) for k in range(count)]
