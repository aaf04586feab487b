"""The built-in drivers. They register through the same entry point a third-party plugin uses."""

from __future__ import annotations

from layerbench.harness import hookimpl
from layerbench.harness.plugins import DriverRegistry

from .btrfs import BtrfsDriver
from .containerd_overlayfs import ContainerdOverlayfsDriver
from .fuse_overlayfs import FuseOverlayfsDriver
from .null import NullDriver
from .overlay2 import Overlay2Driver
from .overlay2_rootless import Overlay2RootlessDriver
from .reflink import ReflinkDriver
from .vfs import VfsDriver
from .zfs import ZfsDriver

__all__ = ["BtrfsDriver", "ContainerdOverlayfsDriver", "FuseOverlayfsDriver", "NullDriver", "Overlay2Driver", "Overlay2RootlessDriver", "ReflinkDriver", "VfsDriver", "ZfsDriver"]


@hookimpl
def layerbench_register_drivers(registry: DriverRegistry) -> None:
    for cls in (NullDriver, VfsDriver, Overlay2Driver, Overlay2RootlessDriver, BtrfsDriver, FuseOverlayfsDriver, ReflinkDriver, ZfsDriver,
                ContainerdOverlayfsDriver):
        registry.add(cls)
