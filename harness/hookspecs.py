"""The hooks a layerbench plugin can implement."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .plugins import DriverRegistry

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "layerbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def layerbench_register_drivers(registry: DriverRegistry) -> None:
    """Add driver classes with ``registry.add(MyDriver)``.

    :param registry: the registry; a duplicate name or a class missing a method of
        :class:`layerbench.harness.driver.Driver` is refused, naming the plugin.
    """
