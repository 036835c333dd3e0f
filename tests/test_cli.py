"""pipeline.cli: the exit-status contract every stage main shares."""

import logging

import pytest

from pipeline.cli import Once, run_stage
from pipeline.errors import DataError

log = logging.getLogger("test.cli")


def _raise(exc):
    raise exc


def test_success_passes_arguments_and_returns_0():
    seen = []
    assert run_stage(log, lambda a, b=0: seen.append((a, b)), 1, b=2) == 0
    assert seen == [(1, 2)]


def test_data_error_is_logged_with_the_file_and_returns_1(caplog, tmp_path):
    bad = tmp_path / "clip.mp4"
    with caplog.at_level(logging.ERROR, logger="test.cli"):
        assert run_stage(log, _raise, DataError(bad, "cannot be decoded")) == 1
    assert str(bad) in caplog.text and "cannot be decoded" in caplog.text


@pytest.mark.parametrize("config_errors", [False, True])
def test_value_error_is_a_config_error_only_when_asked(caplog, config_errors):
    work = (log, _raise, ValueError("unknown model 'x'"))
    if not config_errors:
        with pytest.raises(ValueError, match="unknown model"):
            run_stage(*work)
        return
    with caplog.at_level(logging.ERROR, logger="test.cli"):
        assert run_stage(*work, config_errors=True) == 1
    assert "config: unknown model 'x'" in caplog.text


def test_other_exceptions_keep_their_traceback():
    with pytest.raises(KeyError):
        run_stage(log, _raise, KeyError("bug"))


def test_once_loads_on_first_call_only_and_retries_after_a_failure():
    calls = []

    def load(x, y=0):
        calls.append((x, y))
        if len(calls) == 1:
            raise DataError("ckpt.pt", "unreadable")
        return object()

    once = Once(load, 1, y=2)
    assert calls == []  # nothing loaded until a video needs it
    with pytest.raises(DataError):
        once()
    first = once()
    assert once() is first and calls == [(1, 2), (1, 2)]
