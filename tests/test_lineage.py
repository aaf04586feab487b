"""The driver contract's lineage (harness/driver.py): ids refused when taken, layers with children
kept, adopted layers known; a driver written before it existed still loads and runs."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from layerbench import Driver, LayerFormat, Lineage, Style, hookimpl
from layerbench.drivers import NullDriver
from layerbench.plugins import load_plugins
from layerbench.run.templates import family_key


def _errno(call: Callable[[], object]) -> int | None:
    with pytest.raises(OSError) as info:
        call()
    return info.value.errno


def test_an_id_is_taken_once_across_layers_and_containers() -> None:
    lineage = Lineage()
    lineage.add("l0", None)
    lineage.add("c0", "l0")
    assert _errno(lambda: lineage.add("l0", None)) == errno.EEXIST
    assert _errno(lambda: lineage.check_new("c0")) == errno.EEXIST  # one namespace: `remove` takes either
    assert _errno(lambda: lineage.add_commit("c0", "c0")) == errno.EEXIST
    lineage.add_commit("l1", "c0")
    assert lineage.parent["l1"] == "l0", "a committed layer's parent is its container's image"
    assert "l1" in lineage and "l9" not in lineage


def test_a_layer_with_children_is_busy_until_they_go_and_its_id_is_free_after() -> None:
    lineage = Lineage()
    lineage.add_all([("l0", None), ("l1", "l0")])
    lineage.add("c0", "l1")
    assert _errno(lambda: lineage.check_removable("l0")) == errno.EBUSY
    assert _errno(lambda: lineage.check_removable("l1")) == errno.EBUSY
    lineage.check_removable("c0")
    lineage.forget("c0")
    lineage.check_removable("l1")
    lineage.forget("l1")
    lineage.check_removable("l0")
    lineage.forget("l0")
    lineage.add("l0", None)  # free again


def test_adopted_layers_are_known_to_the_driver(tmp_path: Path) -> None:
    """`Driver.adopt` (what a run's template hands a driver on a copied store) goes into the lineage:
    the image's layers cannot be made again, and a layer with a child cannot go."""
    driver = NullDriver(tmp_path)
    driver.setup()
    driver.adopt([("l0", None), ("l1", "l0")])
    assert _errno(lambda: driver.create_layer("l1", "l0")) == errno.EEXIST
    assert _errno(lambda: driver.remove("l0")) == errno.EBUSY
    driver.create_container("c0", "l1")
    assert _errno(lambda: driver.remove("l1")) == errno.EBUSY
    driver.remove("c0")
    driver.remove("l1")
    driver.remove("l0")
    driver.let_go()  # nothing held: the default does nothing and raises nothing
    driver.close()


class _OldDriver(Driver):
    """A third-party driver written before `Driver.lineage`: its own __init__ without super(), its own parents."""

    name = "old-style"
    style = Style.COPY
    layer_format = LayerFormat.FULL
    backings = ("dir",)

    def __init__(self, home: Path) -> None:
        self.home = home
        self.parents: dict[str, str | None] = {}

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        (self.home / layer_id).mkdir()
        self.parents[layer_id] = parent
        return self.home / layer_id

    def create_container(self, container_id: str, image: str) -> None:
        (self.home / container_id).mkdir()
        self.parents[container_id] = image

    def mount(self, container_id: str) -> Path:
        return self.home / container_id

    def unmount(self, container_id: str) -> None:
        pass

    def commit(self, container_id: str, layer_id: str) -> None:
        self.create_layer(layer_id, self.parents[container_id])

    def remove(self, item_id: str) -> None:
        if item_id in self.parents.values():
            raise OSError(errno.EBUSY, "has children")
        (self.home / item_id).rmdir()
        del self.parents[item_id]

    def inspect(self, item_id: str) -> dict[str, str]:
        return {"Dir": str(self.home / item_id)}


class _OldPlugin:
    __name__ = "old-style-plugin"

    @hookimpl
    def layerbench_register_drivers(self, registry):
        registry.add(_OldDriver)


def test_a_driver_written_before_the_lineage_still_loads_and_runs(tmp_path: Path) -> None:
    plugins = load_plugins(extra=(_OldPlugin(),))
    assert plugins.registry.drivers["old-style"] is _OldDriver and "old-style-plugin" not in plugins.broken
    assert not _OldDriver.adopts_store, "a driver that does not say it adopts a store is never re-opened on a copy"
    assert family_key(SimpleNamespace(driver=_OldDriver, scenario=None, backing="dir")) is None  # type: ignore[arg-type]
    driver = _OldDriver(tmp_path)
    driver.setup()
    driver.create_layer("l0", None)
    driver.create_container("c0", "l0")
    driver.commit("c0", "l1")
    assert _errno(lambda: driver.remove("l0")) == errno.EBUSY
    driver.remove("c0")
    driver.close()
