"""HDF5 caches: atomic creation with provenance attributes, and checked opening.

Every cache is one HDF5 file whose root attributes say what it is (``format_version``,
``stage``, ``config_json``/``config_sha256``, ``code_version``/``code_hash``, ``source``,
``created_utc``, ``versions_json``), so it opens in h5ls/HDFView without project code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from pipeline.atomic import atomic_path
from pipeline.errors import DataError
from pipeline.provenance import provenance_attrs


@contextlib.contextmanager
def create_cache(path: str | Path, *, stage: str, module: str, config: Any, format_version: int,
                 source: str = "", **extra_attrs: Any) -> Iterator[h5py.File]:
    """Open a new cache for writing; it appears at ``path`` only when the block succeeds.

    Args:
        path: final file name.
        stage: stage name stored in ``attrs["stage"]``.
        module: the stage's module (``"pipeline.flow"``), whose code hash is stored.
        config: the stage config (dict or dataclass), stored as JSON with its hash.
        format_version: layout version of this stage's files; readers check it.
        source: model, checkpoint or input the content was computed from.
        extra_attrs: further root attributes (e.g. ``video``).
    """
    attrs = provenance_attrs(stage=stage, module=module, config=config,
                             format_version=format_version, source=source)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(attrs)
            for key, value in extra_attrs.items():
                f.attrs[key] = value
            yield f


def open_cache(path: str | Path, *, stage: str, format_version: int) -> h5py.File:
    """Open a cache read-only and check that it is the expected stage and layout version."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"missing {stage} cache")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise DataError(path, f"not a readable HDF5 file ({exc})") from exc
    got_stage = f.attrs.get("stage")
    got_version = f.attrs.get("format_version")
    if got_stage != stage or got_version != format_version:
        f.close()
        raise DataError(path, f"expected a {stage!r} cache of format {format_version}, "
                              f"found stage={got_stage!r} format={got_version!r}")
    return f
