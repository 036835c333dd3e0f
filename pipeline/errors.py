"""Exceptions that name the file and the problem, so a failed job's log says what to fix."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: a malformed, missing or inconsistent file.

    The message always starts with the offending path.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
