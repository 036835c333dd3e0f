"""Provenance of cached files: code hash of a stage, config hash, versions.

``code_hash("pipeline.flow")`` hashes the source of a module and of every ``pipeline`` module it
imports (transitively, found by parsing imports), so Snakemake re-runs a stage when its code or
the code it uses changes, and nothing else (``params: code=...`` in the rules).
"""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import importlib.util
import json
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

import pipeline

PACKAGE_ROOT = Path(pipeline.__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE_ROOT / "__init__.py"
    rel = Path(*parts)
    for candidate in (PACKAGE_ROOT / rel.with_suffix(".py"), PACKAGE_ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pipeline")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "pipeline":
                continue
            found.add(mod)
            # ``from pipeline.a2d import classes`` imports a submodule, not a name.
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


@lru_cache(maxsize=None)
def module_closure(module: str) -> tuple[str, ...]:
    """Sorted names of ``module`` and every ``pipeline`` module it imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen.add(name)
        if path.name == "__init__.py":  # `python -m pkg` runs pkg/__main__.py
            todo.append(f"{name}.__main__")
        parts = name.split(".")
        # importing a.b.c also runs a/__init__ and a/b/__init__
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(path, name))
    return tuple(sorted(seen))


def code_hash(module: str) -> str:
    """sha256 (first 16 hex digits) over the sources of ``module``'s closure in ``pipeline``."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(module)
    h = hashlib.sha256()
    for name in module_closure(module):
        path = _module_file(name)
        assert path is not None
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def config_json(config: Any) -> str:
    """Canonical JSON of a stage config (a dict or a dataclass)."""
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Any) -> str:
    return hashlib.sha256(config_json(config).encode()).hexdigest()[:16]


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[: limit or 64]


def versions() -> dict[str, str]:
    """Installed versions of the libraries that shape a cache (read from package metadata:
    importing torch here would add seconds to every stage job)."""
    from importlib import metadata

    out = {"actorseg": pipeline.__version__, "python": platform.python_version()}
    for dist in ("numpy", "h5py", "torch", "torchvision", "opencv-python", "ptlflow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except ImportError:
        pass
    return out


def provenance_attrs(*, stage: str, module: str, config: Any, format_version: int,
                     source: str = "") -> dict[str, str | int]:
    """The attributes every cache carries on its root group (see README, "Caches")."""
    return {
        "format_version": format_version,
        "stage": stage,
        "config_json": config_json(config),
        "config_sha256": config_hash(config),
        "code_version": pipeline.__version__,
        "code_hash": code_hash(module),
        "source": source,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions_json": json.dumps(versions(), sort_keys=True),
    }
