"""Shared fixtures. The synthetic generator feeds both unit tests and the workflow tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Workflow rules call `python -m pipeline.<stage>`: make that the interpreter running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

#: A tiny synthetic dataset: seconds to generate, enough for every stage to run.
TINY_SYNTH = {
    "enabled": True, "videos": 6, "seed": 3, "height": 48, "widths": [64, 72], "frames": [12, 14],
    "annotated": 2, "test_fraction": 0.34, "fps": 24,
}


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> Path:
    """A synthetic A2D ``Release/`` folder (6 videos, 48 px high), generated once per session."""
    from pipeline.config import stage_config
    from pipeline.synth import SynthConfig, generate_release

    out = tmp_path_factory.mktemp("a2d") / "Release"
    generate_release(out, stage_config(SynthConfig, "synthetic", TINY_SYNTH))
    return out
