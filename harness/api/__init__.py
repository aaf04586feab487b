"""layerbench: benchmark container-image storage drivers side by side on the real kernel.

The public API in one place: the driver interface and plugin marker for driver
authors, and `load` for notebooks.
"""

from layerbench.harness.driver import Driver, LayerFormat, Style
from layerbench.harness.errors import UserError
from layerbench.harness.hookspecs import hookimpl
from layerbench.harness.results import load

__all__ = ["Driver", "LayerFormat", "Style", "UserError", "hookimpl", "load"]
