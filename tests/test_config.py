"""config.yaml <-> schema <-> stage dataclasses."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.config import defaults, from_dict, load_config, validate

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_default_config_is_valid():
    cfg = load_config(ROOT / "config.yaml")
    assert cfg["synthetic"]["enabled"] is True
    assert cfg["dataset"]["release"] == "results/synthetic/Release"


def test_every_schema_key_is_typed_described_and_defaulted():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            where = f"{path}.{key}".lstrip(".")
            assert "type" in sub, f"{where} has no type"
            assert "description" in sub, f"{where} has no description"
            assert "default" in sub, f"{where} has no default"
            walk(sub, where)

    walk(schema, "")


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="synthetic/videos"):
        validate({"synthetic": {"videos": 0}})
    with pytest.raises(ValueError, match="Additional properties"):
        validate({"nonsense": 1})


@dataclass(frozen=True)
class Inner:
    x: int


@dataclass(frozen=True)
class Outer:
    inner: Inner
    sizes: tuple[int, ...]
    name: str | None


def test_from_dict_nested_and_strict():
    obj = from_dict(Outer, {"inner": {"x": 1}, "sizes": [1, 2], "name": None})
    assert obj == Outer(Inner(1), (1, 2), None)
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(Outer, {"inner": {"x": 1}, "sizes": [], "name": None, "extra": 1})
    with pytest.raises(ValueError, match="Outer.inner: missing key 'x'"):
        from_dict(Outer, {"inner": {}, "sizes": [], "name": None})


def test_defaults_fill_every_section():
    cfg = defaults()
    assert cfg["dataset"]["on_bad_video"] == "fail"
    # one process per training job and one job per video unless asked
    assert cfg["cluster"] == {"train_gpus": 1, "train_threads": 2, "videos_per_job": 1}
    assert cfg["targets"] == {"dang_rgb": True, "ji_table3": False}
