"""layerbench: benchmark container-image storage drivers side by side on the real kernel.

The public face in one place: the driver interface and plugin marker for driver
authors, and `load` for notebooks. The package is grouped by concern (docs/architecture.md):
`run` (a run and its cells), `images` (image sources and layer import), `kernel`
(syscalls), `analysis` (results, stats, claims, compare), `report` (exporters and plots),
`testing` (the conformance suite), `cli` (one module per verb).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from layerbench import _compat
from layerbench.driver import Driver, LayerFormat, Lineage, Style
from layerbench.errors import UserError
from layerbench.hookspecs import hookimpl

if TYPE_CHECKING:
    from layerbench.analysis.results import load

__all__ = ["Driver", "LayerFormat", "Lineage", "Style", "UserError", "hookimpl", "load"]

_compat.install(sys.modules[__name__])


def __getattr__(name: str) -> Any:
    """`load` is imported on first use: it brings pandas, which the CLI and drivers do not need."""
    if name == "load":
        from layerbench.analysis.results import load

        return load
    raise AttributeError(f"module 'layerbench' has no attribute {name!r}")
