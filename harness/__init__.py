"""layerbench's core: the driver interface, plugin loading, runner, results and CLI."""

from .driver import Driver, LayerFormat, Style
from .errors import UserError
from .hookspecs import hookimpl

__all__ = ["Driver", "LayerFormat", "Style", "UserError", "hookimpl"]
