"""The built-in drivers. They register through the same entry point a third-party plugin uses."""

from __future__ import annotations

from layerbench import hookimpl
from layerbench.plugins import DriverRegistry

from .btrfs import BtrfsDriver
from .composefs import ComposefsDriver
from .containerd_overlayfs import ContainerdOverlayfsDriver
from .containerd_snapshotter import (
    ContainerdBtrfsSnapshotter,
    ContainerdNativeSnapshotter,
    ContainerdOverlayfsSnapshotter,
)
from .erofs import ErofsDriver
from .erofs_directio import ErofsDirectioDriver
from .fuse_overlayfs import FuseOverlayfsDriver
from .null import NullDriver
from .overlay2 import Overlay2Driver
from .overlay2_rootless import Overlay2RootlessDriver
from .podman import PodmanBtrfs, PodmanOverlay, PodmanVfs
from .reflink import ReflinkDriver
from .squashfs import SquashfsDriver
from .vfs import VfsDriver
from .zfs import ZfsDriver

__all__ = [
    "BtrfsDriver",
    "ComposefsDriver",
    "ContainerdBtrfsSnapshotter",
    "ContainerdNativeSnapshotter",
    "ContainerdOverlayfsDriver",
    "ContainerdOverlayfsSnapshotter",
    "ErofsDriver",
    "ErofsDirectioDriver",
    "FuseOverlayfsDriver",
    "NullDriver",
    "Overlay2Driver",
    "Overlay2RootlessDriver",
    "PodmanBtrfs",
    "PodmanOverlay",
    "PodmanVfs",
    "ReflinkDriver",
    "SquashfsDriver",
    "VfsDriver",
    "ZfsDriver",
]


@hookimpl
def layerbench_register_drivers(registry: DriverRegistry) -> None:
    for cls in (
        NullDriver,
        VfsDriver,
        Overlay2Driver,
        Overlay2RootlessDriver,
        BtrfsDriver,
        FuseOverlayfsDriver,
        ReflinkDriver,
        ZfsDriver,
        ContainerdOverlayfsDriver,
        ErofsDriver,
        ErofsDirectioDriver,
        SquashfsDriver,
        ComposefsDriver,
        ContainerdOverlayfsSnapshotter,
        ContainerdNativeSnapshotter,
        ContainerdBtrfsSnapshotter,
        PodmanOverlay,
        PodmanVfs,
        PodmanBtrfs,
    ):
        registry.add(cls)
