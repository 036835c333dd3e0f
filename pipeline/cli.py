"""What every stage's ``main`` shares: the log format, and bad input -> one error line, exit 1.

    setup_logging()
    cfg = config_from_args(args, ...)
    return run_stage(log, compute_something, cfg, out=args.out)

A :class:`~pipeline.errors.DataError` names the file and the problem; the stage logs it and
exits with status 1, so Snakemake marks this job failed and (``--keep-going``) the other videos
go on. Other exceptions keep their traceback: they are bugs, not bad input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.errors import DataError

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """INFO and above to stderr (a rule's log file), one line per record, named by module."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def run_stage(log: logging.Logger, work: Callable[..., Any], *args: Any,
              config_errors: bool = False, **kwargs: Any) -> int:
    """``work(*args, **kwargs)``; exit status 0, or 1 after logging a DataError.

    ``config_errors``: a ValueError is also a bad input (an unknown model name, a missing
    checkpoint) and is logged as ``config: ...`` instead of raised.
    """
    try:
        work(*args, **kwargs)
    except DataError as exc:
        log.error("%s", exc)
        return 1
    except ValueError as exc:
        if not config_errors:
            raise
        log.error("config: %s", exc)
        return 1
    return 0
