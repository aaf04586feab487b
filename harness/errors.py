"""The one exception type for expected failures: shown as one line, no traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input or an unmet precondition: the CLI prints it as one line and exits 2."""

    exit_code = 2
