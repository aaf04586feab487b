"""Build an image once per cell family and start each of its cells from an exact copy.

A family is the cells of a run that share an image, a driver, a backing filesystem and
so a store: the first builds the image on a fresh store (mkfs, driver set-up, layer by
layer), whose backing file, unmounted cleanly, becomes the family's template; every
cell then loop-mounts its own copy of it (a reflink where the host shares extents, else
a sparse copy) and re-opens the driver on it. Each cell so starts on a fresh filesystem
holding the bytes a fresh build leaves, with the build's disk figures; the store is sized
for the family's largest cell. docs/performance.md says how the page cache is matched.

Only drivers that say they can take over such a store (`Driver.adopts_store`: their whole
state is on it, save what `Driver.adopt` is told) are re-opened: overlay2, vfs, btrfs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbench.driver import Driver
from layerbench.environment import RunEnvironment
from layerbench.images.build import layer_ids
from layerbench.kernel.safety import remove_tree
from layerbench.run.backing import Usage, allocated_bytes
from layerbench.run.builds import build_measured
from layerbench.run.ledger import Ledger
from layerbench.run.session import DriverSession

if TYPE_CHECKING:
    from layerbench.run.runner import Cell

__all__ = ["Template", "Templates", "family_key", "build_template", "adopt", "let_go", "warm"]


@dataclass
class Template:
    """A built store's backing file and what the build measured."""

    image: Path
    size_bytes: int
    inodes: int
    base: Usage  # the store's usage before the driver was set up
    base_walk: int
    top: str
    per_layer: list[int]
    layers: list[tuple[str, str | None]]  # (layer id, parent), bottom first
    image_bytes: int
    inspect: dict[str, str]


def family_key(cell: Cell) -> tuple[str, ...] | None:
    """The cell's family, or None when it builds its own store (another driver, a "dir" store,
    further images, an image from a path)."""
    s = cell.scenario
    if not cell.driver.adopts_store or cell.driver.userns or cell.backing == "dir" or s.raw_images:
        return None
    from layerbench.scenario import _subst

    image = _subst(s.raw_image, cell.params)
    if image.get("source", "synthetic") != "synthetic":
        return None
    return json.dumps(image, sort_keys=True), cell.driver.name, cell.backing


def build_template(
    cell: Cell,
    workdir: Path,
    size_bytes: int,
    inodes: int,
    ledger: Ledger | None = None,
    env: RunEnvironment | None = None,
) -> Template:
    """Build the cell's image on a fresh store in `workdir` as a cell does (harness/run/cell.py), and
    keep its backing file, cleanly unmounted, as its family's template."""
    loop_io = (env or RunEnvironment()).loop_io
    session = DriverSession.new(
        cell.driver, workdir, cell.backing, size_bytes, inodes, ledger=ledger, loop_io=loop_io, own_workdir=True
    )
    try:
        session.open_store()
        store = session.store
        base, base_walk = store.usage(), allocated_bytes(store.mountpoint)
        driver = session.start()
        image, ids = cell.image, layer_ids(cell.image)
        top, per_layer = build_measured(image, driver, store, base.bytes)
        template = Template(
            store.image,
            store.size_bytes,
            inodes,
            base,
            base_walk,
            top,
            per_layer,
            [(layer, ids[i - 1] if i else None) for i, layer in enumerate(ids)],
            image.total_bytes,
            driver.inspect(top),
        )
        let_go(driver)
        session.forget_driver()
        store.close(keep_file=True)
        return template
    except BaseException:
        session.close()
        raise


def adopt(driver: Driver, template: Template) -> None:
    """Tell a driver set up on a copied store the layers the template's build made."""
    driver.adopt(template.layers)


def let_go(driver: Driver) -> None:
    """Release what a driver holds open on its store without removing anything (close would)."""
    driver.let_go()


def warm(root: Path) -> None:
    """Read every file and directory under `root` once, as a fresh build leaves them in the page cache."""
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a symlink, a fifo, a device
            try:
                while os.read(fd, 1 << 20):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)


@dataclass
class Templates:
    """The run's templates under `root`: which families get one (two or more cells), their store sizes."""

    root: Path
    sizes: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    built: dict[tuple[str, ...], Template] = field(default_factory=dict)
    ledger: Ledger | None = None

    left: dict[tuple[str, ...], int] = field(default_factory=dict)

    @classmethod
    def plan(cls, root: Path, cells: list[Cell], size: Any, ledger: Ledger | None = None) -> Templates:
        """Templates for the families of `cells` with two or more; `size(cell)` is a cell's (bytes, inodes)."""
        members: dict[tuple[str, ...], list[Cell]] = {}
        for c in cells:
            if (key := family_key(c)) is not None:
                members.setdefault(key, []).append(c)
        sizes = {}
        for key, group in members.items():
            if len(group) > 1:
                need = [size(c) for c in group]
                sizes[key] = (max(b for b, _ in need), max(i for _, i in need))
        return cls(root, sizes, ledger=ledger, left={k: len(members[k]) for k in sizes})

    def get(self, cell: Cell, build: Callable[[Path, int, int], Template]) -> tuple[Template | None, float]:
        """The cell's family template, built by `build(dir, bytes, inodes)` for its first cell, and the
        seconds building it took (0 when it was there). None: the cell builds its own store (a family of
        one, or its template failed to build; the cell then meets the error itself)."""
        key = family_key(cell)
        if key is None or key not in self.sizes:
            return None, 0.0
        if key in self.built:
            return self.built[key], 0.0
        started = time.monotonic()
        try:
            self.built[key] = build(self.root / f"template{len(self.built) + 1}", *self.sizes[key])
        except Exception:  # noqa: BLE001  the cell runs on a store of its own and reports the error
            del self.sizes[key]
            return None, time.monotonic() - started
        return self.built[key], time.monotonic() - started

    def done(self, cell: Cell) -> None:
        """A cell of the family ran: after its last, the template's file goes."""
        key = family_key(cell)
        if key in self.left:
            self.left[key] -= 1
            if self.left[key] == 0 and key in self.built:
                self._remove(self.built.pop(key))

    def _remove(self, t: Template) -> None:
        if t.image.exists():
            t.image.unlink()
            if self.ledger is not None:
                self.ledger.released("file", t.image)
        remove_tree(t.image.parent)
        if self.ledger is not None:
            self.ledger.released("dir", t.image.parent)

    def close(self) -> None:
        """Remove every template file."""
        for t in self.built.values():
            self._remove(t)
        self.built.clear()
