"""A layer stack checked against a plain directory: containerd's snapshotter testsuite method."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from layerbench.driver import Driver, LayerFormat
from layerbench.kernel.safety import remove_tree
from layerbench.kernel.treecopy import copy_tree
from layerbench.testing.changes import Op, apply_to_diff, set_attrs
from layerbench.testing.trees import Tree, compare, snapshot

__all__ = ["Stack", "EBUSY_CONTRACT"]

#: What a driver raises when asked to remove a layer that has children.
EBUSY_CONTRACT = "remove() of a layer with children raises OSError with errno EBUSY"


@dataclass
class Stack:
    """A linear image built through a driver and, in step, in a plain reference directory."""

    driver: Driver
    ref: Path
    top: str | None = None
    expected: dict[str, Tree] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        self.ref.mkdir(parents=True, exist_ok=True)
        set_attrs(self.ref, 0o755, 0, 0)

    def _id(self, kind: str) -> str:
        self._n += 1
        return f"{kind}{self._n}"

    def layer(self, *ops: Op) -> str:
        """A new image layer on the top: created, filled with `ops` in the driver's format, sealed."""
        lid = self._id("l")
        path = self.driver.create_layer(lid, self.top)
        for op in ops:
            op.apply(self.ref)
        if self.driver.layer_format is LayerFormat.FULL:
            for op in ops:
                op.apply(path)
        else:
            for op in ops:
                apply_to_diff(op, path, self.ref, self.driver.opaque_xattr)
        self.driver.seal_layer(lid)
        self.expected[lid] = snapshot(self.ref)
        self.top = lid
        return lid

    def commit(self, *ops: Op, mounted: bool = False, then: Sequence[Op] = ()) -> str:
        """A container on the top, `ops` done in its mounted root, committed as the new top.

        The container is unmounted before `commit`, or with `mounted` committed while mounted, as
        the runner does after a scenario's `start` (`Driver.commit`). Then `then` is done in the
        still-mounted container: it must show `then` over what was committed (asserted here), and
        the new layer must not (`check` shows it).
        """
        if self.top is None:
            raise ValueError("commit needs an image: add a layer first")
        cid = self._id("c")
        self.driver.create_container(cid, self.top)
        root = self.driver.mount(cid)
        lid = None
        try:
            self._apply(ops, root)
            for op in ops:
                op.apply(self.ref)
            if mounted:
                lid = self._id("l")
                self.driver.commit(cid, lid)
                self._check_still_mounted(cid, root, then)
        finally:
            self.driver.unmount(cid)
        if lid is None:
            lid = self._id("l")
            self.driver.commit(cid, lid)
        self.driver.remove(cid)
        self.expected[lid] = snapshot(self.ref)
        self.top = lid
        return lid

    def _apply(self, ops: Sequence[Op], root: Path) -> None:
        for op in ops:
            if note := op.apply(root):
                self.notes.append(f"{self.driver.name}: {note}")

    def _check_still_mounted(self, cid: str, root: Path, then: Sequence[Op]) -> None:
        """After a commit of mounted container `cid`: its root takes `then` and shows the plain
        directory with `then` done in a copy of it."""
        # beside the driver's home, on its store: the one place a userns driver's test can write besides `ref`
        scratch = Path(tempfile.mkdtemp(prefix=".stack-", dir=self.driver.home.parent)) / "tree"
        copy_tree(str(self.ref), str(scratch))
        try:
            self._apply(then, root)
            for op in then:
                op.apply(scratch)
            problems = compare(self._declared(snapshot(scratch)), snapshot(root))
        finally:
            remove_tree(scratch.parent)
        if problems:
            shown = "\n  ".join(problems[:40])
            raise AssertionError(
                f"driver {self.driver.name}: container {cid}, committed while mounted and then changed, "
                f"differs from the plain directory:\n  {shown}"
            )

    def _declared(self, expected: Tree) -> Tree:
        """`expected` with the root's mode a driver declares it gives every image (`Driver.root_mode`)."""
        if (mode := self.driver.root_mode) is not None and "." in expected.entries:
            root = expected.entries["."]
            entries = {**expected.entries, ".": dataclasses.replace(root, mode=(root.mode & ~0o7777) | mode)}
            return dataclasses.replace(expected, entries=entries)
        return expected

    def view(self, layer: str | None = None) -> Tree:
        """The tree a fresh container on `layer` (default: the top) shows."""
        image = layer or self.top
        assert image is not None
        cid = self._id("v")
        self.driver.create_container(cid, image)
        root = self.driver.mount(cid)
        try:
            return snapshot(root)
        finally:
            self.driver.unmount(cid)
            self.driver.remove(cid)

    def check(self, layer: str | None = None) -> None:
        """Assert a container on `layer` shows what the plain directory held at that layer."""
        image = layer or self.top
        assert image is not None
        problems = compare(self._declared(self.expected[image]), self.view(image))
        if problems:
            shown = "\n  ".join(problems[:40])
            raise AssertionError(
                f"driver {self.driver.name}: a container on {image} differs from the plain directory:\n  {shown}"
            )

    def check_all(self) -> None:
        """`check` every layer made so far, bottom first."""
        for layer in self.expected:
            self.check(layer)
