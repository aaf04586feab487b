"""The built-in drivers. They register through the same entry point a third-party plugin uses."""

from __future__ import annotations

from layerbench.harness import hookimpl
from layerbench.harness.plugins import DriverRegistry

from .btrfs import BtrfsDriver
from .null import NullDriver
from .overlay2 import Overlay2Driver
from .vfs import VfsDriver

__all__ = ["BtrfsDriver", "NullDriver", "Overlay2Driver", "VfsDriver"]


@hookimpl
def layerbench_register_drivers(registry: DriverRegistry) -> None:
    for cls in (NullDriver, VfsDriver, Overlay2Driver, BtrfsDriver):
        registry.add(cls)
