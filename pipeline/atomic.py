"""Write-then-rename for every file the pipeline produces.

A file is written under ``<name>.tmp.<pid>`` in the destination folder and renamed with
``os.replace`` only once it is complete (atomic on POSIX within one filesystem), so a job killed
at any point never leaves a file that looks finished. ``$TMPDIR`` is not used because a rename
across filesystems is a copy, not atomic.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp.{os.getpid()}")


def clean_stale_tmp(path: Path) -> None:
    """Remove leftovers ``<name>.tmp.*`` of earlier killed writers of ``path``."""
    for stale in path.parent.glob(f"{path.name}.tmp.*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer produced no file for {path}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
