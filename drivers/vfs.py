"""vfs: every layer and every container is a full copy of its parent (Docker's vfs on ext4)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from layerbench.driver import Driver, LayerFormat, Style
from layerbench.kernel.treecopy import FileCopier, copy_data, copy_tree

from ._common import remove_tree


class VfsDriver(Driver):
    name = "vfs"
    style = Style.COPY
    layer_format = LayerFormat.FULL
    backings: ClassVar[tuple[str, ...]] = ("ext4", "xfs", "btrfs", "dir")
    in_default_run = True
    adopts_store = True  # the trees are the whole state
    #: how a regular file is copied into a child tree: every byte, here
    copy_file: ClassVar[FileCopier] = staticmethod(copy_data)

    def _copy(self, source: str, target: str) -> None:
        copy_tree(str(self._dir(source)), str(self._dir(target)), copy_file=type(self).copy_file)

    def _dir(self, item_id: str) -> Path:
        return self.home / "dir" / item_id

    def setup(self) -> None:
        (self.home / "dir").mkdir(exist_ok=True)

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.check_new(layer_id)
        path = self._dir(layer_id)
        if parent is None:
            path.mkdir(mode=0o755)
        else:
            self._copy(parent, layer_id)
        self.lineage.add(layer_id, parent)
        return path

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self._copy(image, container_id)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        return self._dir(container_id)  # Get is the directory itself; Put is a no-op

    def unmount(self, container_id: str) -> None:
        pass

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
        self._copy(container_id, layer_id)
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        remove_tree(self._dir(item_id))
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        return {"Dir": str(self._dir(item_id))}

    def close(self) -> None:
        remove_tree(self.home / "dir")
