"""null: stores nothing and mounts nothing, to test the harness and measure its overhead.

Every layer and every container is the same plain directory, so a scenario's
file I/O still has somewhere to go, but no copy, mount or snapshot happens.
"""

from __future__ import annotations

from pathlib import Path

from layerbench.driver import Driver, LayerFormat, Style

from ._common import remove_tree


class NullDriver(Driver):
    name = "null"
    style = Style.NONE
    test_only = True  # it measures the harness, not a storage mechanism
    layer_format = LayerFormat.FULL
    backings = ("dir", "ext4")

    def setup(self) -> None:
        self.root = self.home / "root"
        self.root.mkdir(exist_ok=True)

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.add(layer_id, parent)
        return self.root

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        return self.root

    def unmount(self, container_id: str) -> None:
        pass

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        return {"Dir": str(self.root)}

    def close(self) -> None:
        remove_tree(self.home / "root")
