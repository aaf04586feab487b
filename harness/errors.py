"""The exception types of expected failures: each shown as one line, no traceback."""

from __future__ import annotations

from pathlib import Path

__all__ = ["UserError", "RunStopped", "NotBuilt"]


class UserError(Exception):
    """Bad input or an unmet precondition: the CLI prints it as one line and exits 2."""

    exit_code = 2


class NotBuilt(Exception):
    """An image a dry run (`RunEnvironment.planning`) would have to build first: nothing is built then, so its
    size is unknown until the first run."""


class RunStopped(Exception):
    """A run stopped before its end by something outside it (its fleet's scheduler died): the CLI prints
    one line and exits 1; the run's results file, marked interrupted, is `results_path` (for --resume)."""

    results_path: Path | None = None
