"""The boundary between ``config.yaml`` and the code.

``config.yaml`` is validated by ``workflow/schemas/config.schema.yaml`` (JSON schema, which also
holds every default). Each stage receives only its own section, as a frozen dataclass built by
:func:`from_dict`; ``nn.Module``s receive plain arguments taken from those dataclasses.

A stage's command line takes its section either as ``--config-json '{...}'`` (what the Snakemake
rules pass) or as ``--config config.yaml`` (run by hand), see :func:`add_config_args`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from pipeline.provenance import PACKAGE_ROOT

SCHEMA_PATH = PACKAGE_ROOT.parent / "workflow" / "schemas" / "config.schema.yaml"
T = TypeVar("T")


@lru_cache(maxsize=1)
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(validator_cls: type) -> type:
    validate_props = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_props(validator, properties, instance, schema_)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


_Validator = _fill_defaults(jsonschema.Draft202012Validator)


def validate(config: dict) -> dict:
    """Validate a whole config in place, filling schema defaults; return it."""
    errors = sorted(_Validator(schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
        raise ValueError("invalid config:\n" + "\n".join(lines))
    return config


def load_config(path: str | Path) -> dict:
    with open(path) as f:
        return validate(yaml.safe_load(f) or {})


def defaults() -> dict:
    """The config that an empty ``config.yaml`` would give (every schema default)."""
    return validate({})


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses.

    Unknown or missing keys raise ValueError naming the key path.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where or cls.__name__}: missing key {f.name!r}")
            continue
        value, hint = data[f.name], hints[f.name]
        inner = [a for a in typing.get_args(hint) if a is not type(None)] \
            if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else [hint]
        sub = next((a for a in inner if dataclasses.is_dataclass(a)), None)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, f"{where or cls.__name__}.{f.name}")
        elif isinstance(value, list) and typing.get_origin(inner[0]) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def section(config: dict, name: str) -> dict:
    """``config['a']['b']`` for ``name='a.b'``."""
    node: Any = config
    for part in name.split("."):
        node = node[part]
    return node


def stage_config(cls: type[T], name: str, overrides: dict | None = None) -> T:
    """The schema-default config of section ``name`` as ``cls``, with ``overrides`` merged."""
    data = copy.deepcopy(section(defaults(), name))
    _merge(data, overrides or {})
    return from_dict(cls, data, name)


def _merge(base: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def add_config_args(parser: argparse.ArgumentParser, name: str) -> None:
    """Add ``--config FILE`` / ``--config-json JSON`` for config section ``name``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, metavar="FILE",
                       help=f"config.yaml to take section '{name}' from (default: schema defaults)")
    group.add_argument("--config-json", metavar="JSON",
                       help=f"section '{name}' as JSON (what the Snakemake rule passes)")


def config_from_args(args: argparse.Namespace, cls: type[T], name: str) -> T:
    if args.config_json:
        # Validate through the schema so a partial section gets its defaults filled in.
        wrapped: dict = json.loads(args.config_json)
        for part in reversed(name.split(".")):
            wrapped = {part: wrapped}
        return from_dict(cls, section(validate(wrapped), name), name)
    config = load_config(args.config) if args.config else defaults()
    return from_dict(cls, section(config, name), name)
