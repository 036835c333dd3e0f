"""Flow backend ``dis``: OpenCV's Dense Inverse Search (Kroeger et al., ECCV 2016) on the CPU.

Within 0.1 px on small synthetic shifts and 7 ms per 320x240 pair at the ``medium`` preset on
two cores (shared/docs/environment.md), so it is the default where no FlowNet weights exist.
"""

from __future__ import annotations

import cv2
import numpy as np

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class DISFlow:
    """Dense flow between RGB frames with ``cv2.DISOpticalFlow`` (on grey levels).

    Call with ``first``, ``second``: (B, H, W, 3) uint8 RGB; returns (B, H, W, 2) float32
    (dx, dy) in pixels such that ``first[y, x]`` moves to ``second[y + dy, x + dx]``.
    """

    name = "dis"
    batch_size = 1  # DIS is sequential; batching buys nothing

    def __init__(self, preset: str = "medium") -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose from {sorted(PRESETS)}")
        self.model = f"dis-{preset}"
        self.checkpoint = ""
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        out = []
        for a, b in zip(first, second, strict=True):
            ga = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
            gb = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
            out.append(self._dis.calc(ga, gb, None))
        return np.stack(out).astype(np.float32, copy=False)
