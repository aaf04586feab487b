"""The driver interface: what every storage driver implements.

Smaller than moby's graphdriver and containerd's snapshotter. A driver owns one
directory (its *home*) on a backing filesystem the harness made for it, and keeps
layers and containers there under ids the harness chooses.

The life of an image and a container::

    path = driver.create_layer("l0", parent=None)   # fill `path`, then
    driver.seal_layer("l0")
    driver.create_container("c0", image="l0")
    root = driver.mount("c0")                        # a real directory
    ...                                              # plain file I/O on `root`
    driver.unmount("c0")
    driver.commit("c0", "l1")                        # docker commit
    driver.remove("c0")
    driver.close()                                   # removes everything, idempotent
"""

from __future__ import annotations

import abc
from enum import Enum
from pathlib import Path
from typing import ClassVar, Protocol

__all__ = ["Driver", "Style", "LayerFormat", "ResourceNotes"]


class ResourceNotes(Protocol):
    """The run's ledger as a driver sees it: a daemon it starts is written down before it starts."""

    def made(self, kind: str, path: Path | str) -> None: ...

    def released(self, kind: str, path: Path | str) -> None: ...


class Style(str, Enum):
    """How a driver stores a layer stack."""

    UNION = "union"  # layers are directories merged at mount time (overlayfs)
    COPY = "copy"  # every layer and container is a full copy (vfs)
    SNAPSHOT = "snapshot"  # block- or file-level copy-on-write snapshots (btrfs)
    NONE = "none"  # stores nothing measurable (null)


class LayerFormat(str, Enum):
    """What the directory handed out by `create_layer` holds."""

    DIFF = "diff"  # only this layer's changes; removals are overlay whiteouts
    FULL = "full"  # the parent's whole tree, to be changed in place


class Driver(abc.ABC):
    """A storage driver. Subclasses set the class variables and the abstract methods."""

    name: ClassVar[str]
    style: ClassVar[Style]
    layer_format: ClassVar[LayerFormat]
    #: backing filesystems the driver can sit on; the first is the default
    backings: ClassVar[tuple[str, ...]] = ("ext4",)
    #: run this driver's cells inside an unprivileged user namespace (rootless), see docs/rootless.md
    userns: ClassVar[bool] = False
    #: the xattr marking an opaque directory in a DIFF layer (`user.overlay.opaque` under `userxattr`)
    opaque_xattr: ClassVar[str] = "trusted.overlay.opaque"
    #: whether `layerbench run` without --driver runs it (the built-ins: overlay2, btrfs, vfs)
    in_default_run: ClassVar[bool] = False
    #: a driver for tests and examples (null, the skeleton): never in `run -d all`, only named
    test_only: ClassVar[bool] = False
    #: the engine an engine driver drives ("containerd", "podman"): it starts a daemon or runs the
    #: engine's commands, so its own tests run it with one engine per module (not tests/test_conformance.py)
    engine: ClassVar[str | None] = None
    #: an engine driver's mechanism: the built-in driver doing the same without the engine, shown
    #: beside it in the report's engine-overhead column
    mechanism: ClassVar[str | None] = None
    #: the only xattrs `commit` writes into the new layer (None: all of them). containerd's differ keeps
    #: security.capability alone; the conformance suite checks the others are lost, as declared
    commit_xattrs: ClassVar[tuple[str, ...] | None] = None
    #: the mode an engine gives every image's root directory whatever the layer says (None: the layer's).
    #: containers-storage's overlay driver makes a base layer's root 0555 and children inherit it
    root_mode: ClassVar[int | None] = None
    #: an engine driver: a running engine's address to use instead of starting one (`--containerd-address`)
    engine_address: ClassVar[str | None] = None
    #: the run's ledger, set by the harness before `setup` (None outside a run)
    ledger: ResourceNotes | None = None

    def __init__(self, home: Path) -> None:
        self.home = home

    @classmethod
    def at(cls, address: str | None) -> type[Driver]:
        """This engine driver on the running engine at `address` (None: the engine it starts itself)."""
        if address is None or cls.engine is None:
            return cls
        return type(cls.__name__, (cls,), {"engine_address": address, "__module__": cls.__module__})

    @classmethod
    def probe(cls) -> str | None:
        """Return None when the driver can run here, else one sentence saying why not."""
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of the helper binaries or kernel features the driver relies on."""
        return {}

    def setup(self) -> None:
        """Prepare `home` (already exists, empty). Not timed."""

    @abc.abstractmethod
    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        """Create an image layer on `parent`; return the writable directory to fill."""

    def seal_layer(self, layer_id: str) -> None:
        """Mark a filled layer read-only for its children. Default: nothing to do."""

    @abc.abstractmethod
    def create_container(self, container_id: str, image: str) -> None:
        """Create a read-write layer on top of image layer `image`."""

    @abc.abstractmethod
    def mount(self, container_id: str) -> Path:
        """Make the container's root a real directory and return its path."""

    @abc.abstractmethod
    def unmount(self, container_id: str) -> None:
        """Undo `mount`."""

    @abc.abstractmethod
    def commit(self, container_id: str, layer_id: str) -> None:
        """Turn the container's changes into a new image layer (`docker commit`)."""

    @abc.abstractmethod
    def remove(self, item_id: str) -> None:
        """Remove a layer or an unmounted container."""

    @abc.abstractmethod
    def inspect(self, item_id: str) -> dict[str, str]:
        """GraphDriver data in the spirit of `docker inspect` (LowerDir, UpperDir, ...)."""

    def settle(self) -> None:
        """Wait until removed items have given their space back. Not timed. Default: nothing."""

    def close(self) -> None:
        """Unmount and remove everything the driver made. Idempotent, safe after a crash."""
