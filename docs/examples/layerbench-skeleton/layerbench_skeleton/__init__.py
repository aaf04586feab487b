"""skeleton: the template third-party layerbench driver.

Every layer and every container is a full copy of its parent under
``<home>/trees/<id>`` (vfs's semantics). Replace the bodies with your mechanism;
keep the contract (see layerbench's docs/writing-a-driver.md):

- everything lives under ``self.home``;
- ``mount`` returns a real directory where plain file I/O goes through you;
- ``create_container`` and ``mount`` spawn no process (they are timed);
- an id that exists is refused (``FileExistsError``, EEXIST) and ``remove`` of a layer
  that still has children raises ``OSError(errno.EBUSY)``: ``self.lineage`` (layerbench's
  ``Lineage``, made for every driver) does both, fed as items are made;
- ``commit`` works on a mounted container too, which stays mounted;
- ``close`` removes everything, twice in a row and after a crash half-way.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from layerbench import Driver, LayerFormat, Lineage, Style, hookimpl
from layerbench.kernel.treecopy import copy_tree
from layerbench.plugins import DriverRegistry

__all__ = ["SkeletonDriver", "layerbench_register_drivers"]
__version__ = "0.1.0"


class SkeletonDriver(Driver):
    """Each layer and container a full copy of its parent."""

    name = "skeleton"
    style = Style.COPY
    layer_format = LayerFormat.FULL  # create_layer hands out the parent's whole tree
    backings = ("ext4", "xfs", "dir")  # where the harness may put `home`; the first is the default
    test_only = True  # a template: left out of `layerbench run -d all`; a driver of your own drops this line

    @classmethod
    def probe(cls) -> str | None:
        return None  # plain file I/O: runs anywhere (as root it can keep owners)

    def setup(self) -> None:
        self.trees = self.home / "trees"
        self.trees.mkdir(exist_ok=True)

    def _tree(self, item_id: str) -> Path:
        return self.trees / item_id

    def _copy(self, source: str, item_id: str) -> Path:
        if not self._tree(source).is_dir():
            raise FileNotFoundError(errno.ENOENT, f"skeleton: no layer {source!r}")
        copy_tree(str(self._tree(source)), str(self._tree(item_id)))
        return self._tree(item_id)

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.check_new(layer_id)  # EEXIST before anything is made
        if parent is None:
            self._tree(layer_id).mkdir(mode=0o755)
        else:
            self._copy(parent, layer_id)
        self.lineage.add(layer_id, parent)
        return self._tree(layer_id)

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self._copy(image, container_id)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        return self._tree(container_id)  # already a real directory

    def unmount(self, container_id: str) -> None:
        pass

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
        self._copy(container_id, layer_id)  # mounted or not: the container's tree as it is now
        self.lineage.add_commit(layer_id, container_id)  # the parent is the container's image

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)  # EBUSY while a layer or container is made on it
        shutil.rmtree(self._tree(item_id), ignore_errors=True)
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        return {"Dir": str(self._tree(item_id))}

    def close(self) -> None:
        shutil.rmtree(self.home / "trees", ignore_errors=True)
        self.lineage = Lineage()


@hookimpl
def layerbench_register_drivers(registry: DriverRegistry) -> None:
    """Called once when layerbench loads plugins."""
    registry.add(SkeletonDriver)
