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

The harness chooses every id and parent; a driver records them in its :class:`Lineage`
(``self.lineage``, made by ``Driver.__init__``), which refuses an id that exists and a
removal of a layer that still has children. ``commit`` may be called on a mounted
container (the runner does: a scenario's `commit` step follows a `start`) or an unmounted
one (the conformance suite's layers); a mounted container stays mounted and usable.
"""

from __future__ import annotations

import abc
import errno
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import ClassVar, Protocol

__all__ = ["Driver", "Style", "LayerFormat", "Lineage", "ResourceNotes"]


class ResourceNotes(Protocol):
    """The run's ledger as a driver sees it: a daemon it starts is written down before it starts, and so is
    a namespace it makes on a user's engine (named with `run_id`, which `cleanup` checks)."""

    def made(self, kind: str, path: Path | str) -> None: ...

    def released(self, kind: str, path: Path | str) -> None: ...

    @property
    def run_id(self) -> str: ...


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


class Lineage:
    """Who was made on whom: the ids the harness chose, one namespace for layers and containers.

    A driver records each item as it makes it (`add`, `add_commit`), asks before making one
    (`check_new`: an id that exists is refused with EEXIST) and before removing one
    (`check_removable`: a layer with children is refused with EBUSY), and forgets it once
    removed. A committed layer's parent is its container's image. Kept in memory: it covers
    what this driver object made or adopted (`Driver.adopt`).
    """

    def __init__(self) -> None:
        self.parent: dict[str, str | None] = {}
        self.children: dict[str, set[str]] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.parent

    def check_new(self, item_id: str) -> None:
        """Raise FileExistsError(EEXIST) when `item_id` is a layer or container already."""
        if item_id in self.parent:
            raise FileExistsError(errno.EEXIST, f"{item_id!r} exists: a layer or container has that id")

    def add(self, item_id: str, parent: str | None) -> None:
        """Record `item_id`, made on `parent` (None: a base layer); EEXIST when the id is taken."""
        self.check_new(item_id)
        self.parent[item_id] = parent
        if parent is not None:
            self.children.setdefault(parent, set()).add(item_id)

    def add_commit(self, layer_id: str, container_id: str) -> None:
        """Record `layer_id`, committed from `container_id`: its parent is the container's image."""
        self.add(layer_id, self.parent.get(container_id))

    def add_all(self, items: Iterable[tuple[str, str | None]]) -> None:
        """Record (id, parent) pairs, parents first."""
        for item_id, parent in items:
            self.add(item_id, parent)

    def check_removable(self, item_id: str) -> None:
        """Raise OSError(EBUSY) when `item_id` has children."""
        if kids := self.children.get(item_id):
            raise OSError(errno.EBUSY, f"layer {item_id!r} has children ({', '.join(sorted(kids))}); remove them first")

    def forget(self, item_id: str) -> None:
        """`item_id` is gone: its id is free again."""
        parent = self.parent.pop(item_id, None)
        if parent is not None:
            self.children.get(parent, set()).discard(item_id)
        self.children.pop(item_id, None)


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
    #: whether `adopt` takes over a copy of a store this driver built and let go of (`let_go`): the
    #: run then builds an image once per cell family and starts each cell on a copy (harness/run/templates.py).
    #: Only for a driver whose whole state is on the store, bar what `adopt` is told
    adopts_store: ClassVar[bool] = False
    #: the run's ledger, set by the harness before `setup` (None outside a run)
    ledger: ResourceNotes | None = None
    #: the ids this driver made and their parents (see `Lineage`); a driver written before it
    #: existed may keep its own and ignore this one
    lineage: Lineage

    def __init__(self, home: Path) -> None:
        self.home = home
        self.lineage = Lineage()

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

    def adopt(self, layers: Iterable[tuple[str, str | None]]) -> None:
        """Take over the image layers a build of this driver left on the store now under `home`.

        Called after `setup`, and only when `adopts_store` is True, on a copy of a store on which
        this driver built `layers` ((id, parent) pairs, bottom first), then called `let_go`, and
        whose filesystem was unmounted cleanly. Afterwards the layers are as if made here: a
        container can be made on them, and removing one with children is refused. Default: they
        go into `lineage` (a driver keeping more in memory reads it back from the store here).
        """
        self.lineage.add_all(layers)

    def let_go(self) -> None:
        """Release what the driver holds open on its store (descriptors) and remove nothing, so
        the store can be unmounted cleanly and copied for `adopt`; the object is not used again.
        Only called when `adopts_store` is True. Default: nothing held."""

    @abc.abstractmethod
    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        """Create an image layer on `parent`; return the writable directory to fill.

        An id that is a layer or container already is refused with FileExistsError (EEXIST),
        before anything is made."""

    def seal_layer(self, layer_id: str) -> None:
        """Mark a filled layer read-only for its children. Default: nothing to do."""

    @abc.abstractmethod
    def create_container(self, container_id: str, image: str) -> None:
        """Create a read-write layer on top of image layer `image` (an id that exists: EEXIST)."""

    @abc.abstractmethod
    def mount(self, container_id: str) -> Path:
        """Make the container's root a real directory and return its path."""

    @abc.abstractmethod
    def unmount(self, container_id: str) -> None:
        """Undo `mount`."""

    @abc.abstractmethod
    def commit(self, container_id: str, layer_id: str) -> None:
        """Turn the container's changes into a new image layer (`docker commit`).

        The container may be mounted or not. Mounted (the runner commits after a scenario's
        `start`), the layer holds what was written through the mount before the call; the
        container stays mounted, its later writes reach neither the layer nor the image, and
        it is unmounted and removed as usual. `layer_id` existing already: EEXIST."""

    @abc.abstractmethod
    def remove(self, item_id: str) -> None:
        """Remove a layer or an unmounted container; its id is free again after.

        A layer that still has children (a layer or a container made on it) is refused with
        OSError(EBUSY) and left as it was (`Lineage.check_removable`)."""

    @abc.abstractmethod
    def inspect(self, item_id: str) -> dict[str, str]:
        """GraphDriver data in the spirit of `docker inspect` (LowerDir, UpperDir, ...)."""

    def settle(self) -> None:
        """Wait until removed items have given their space back. Not timed. Default: nothing."""

    def close(self) -> None:
        """Unmount and remove everything the driver made. Idempotent, safe after a crash."""
