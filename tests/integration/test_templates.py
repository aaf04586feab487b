"""A cell started from its family's template is the cell a fresh build gives: same disk figures, same tree."""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.plugins import default_plugins
from layerbench.run import runner
from layerbench.run.builds import build_measured
from layerbench.run.sampling import Sampling
from layerbench.run.session import open_driver
from layerbench.run.templates import Template, adopt
from layerbench.scenario import load_scenario
from layerbench.testing import Tree, compare, snapshot

from ..conftest import require

pytestmark = pytest.mark.mounts

SCENARIO = """
name = "tmpl"
description = "A three-layer image, a container, a copy-up and a write."
[image]
layers = 3
files = 60
bytes = 3000000
seed = 5
[[image.file]]
path = "big.bin"
size = 262144
[[image.remove]]
path = "big.bin"
layer = 2
[[image.file]]
path = "t.bin"
size = 65536
layer = 1
[[step]]
op = "start"
measure = "startup_ns"
[[step]]
op = "append"
path = "t.bin"
bytes = 4096
measure = "copy_up_ns"
[[step]]
op = "write"
path = "w.bin"
bytes = 8192
[[step]]
op = "usage"
"""

#: driver -> the backing its cells use by default
CASES = [("overlay2", "ext4"), ("vfs", "ext4"), ("btrfs", "btrfs")]
DISK = ("image_disk_bytes", "disk_bytes", "disk_walk_bytes", "inodes", "written_bytes")


def _cell(tmp_path: Path, name: str, fs: str) -> runner.Cell:
    require(name)
    path = tmp_path / "tmpl.toml"
    path.write_text(SCENARIO)
    return runner.Cell(load_scenario(path), default_plugins().driver(name), {}, fs)


def _timeless(tree: Tree) -> Tree:
    """The tree without mtimes: files get the time of the build that wrote them, so any two fresh builds differ."""
    return Tree({p: dataclasses.replace(e, mtime_ns=None) for p, e in tree.entries.items()}, tree.links)


@contextmanager
def _container_root(
    cell: runner.Cell, work: Path, template: Template | None, size: int, inodes: int
) -> Iterator[tuple[Path, Driver]]:
    """A container of the cell's image, on a fresh build or on a copy of `template`."""
    backing_file = template.image if template else None
    with open_driver(cell.driver, work, cell.backing, size, inodes, template=backing_file) as session:
        driver, store = session.driver, session.store
        if template is None:
            top, _ = build_measured(cell.scenario.image({}), driver, store, store.usage().bytes)
        else:
            adopt(driver, template)
            top = template.top
        driver.create_container("c", top)
        yield driver.mount("c"), driver
        driver.unmount("c")
        driver.remove("c")


def test_every_driver_that_adopts_a_store_is_checked_here() -> None:
    """`Driver.adopts_store` puts a driver's cells on template copies: each such built-in is in CASES."""
    adopting = {name for name, cls in default_plugins().registry.drivers.items() if cls.adopts_store}
    assert adopting == {name for name, _ in CASES}


@pytest.mark.parametrize(("name", "fs"), CASES)
def test_a_cell_from_a_template_equals_a_fresh_build(tmp_path: Path, name: str, fs: str) -> None:
    cell = _cell(tmp_path, name, fs)
    size, inodes = runner.estimate_bytes(cell), runner.estimate_inodes(cell)
    template = runner.build_template(cell, tmp_path / "template", size, inodes)
    try:
        assert template.image.exists() and not (tmp_path / "template" / "mnt").is_mount()
        pinned = Sampling(samples=2, warmup=0, min_time_s=0.0, cold=False)
        fresh = runner.run_cell(cell, tmp_path / "fresh", pinned)
        copied = runner.run_cell(cell, tmp_path / "copied", pinned, template=template)
        assert fresh["status"] == copied["status"] == "ok", (fresh["error"], copied["error"])
        assert not fresh["template"] and copied["template"]
        figures = {
            m: (fresh["metrics"][m]["samples"], copied["metrics"][m]["samples"]) for m in DISK if m in fresh["metrics"]
        }
        print(
            f"{name} on {fs}: fresh vs template {figures}; layers {fresh['image_layers_disk_bytes']} "
            f"vs {copied['image_layers_disk_bytes']}"
        )
        assert {"image_disk_bytes", "disk_bytes", "disk_walk_bytes"} <= set(figures)
        for metric, (a, b) in figures.items():
            assert a == b, f"{metric}: fresh build {a}, from the template {b}"
        assert fresh["image_layers_disk_bytes"] == copied["image_layers_disk_bytes"]
        assert fresh["image_bytes"] == copied["image_bytes"]

        with _container_root(cell, tmp_path / "tree-fresh", None, size, inodes) as (root, _):
            expected = snapshot(root)
        with _container_root(cell, tmp_path / "tree-copy", template, size, inodes) as (root, driver):
            got = snapshot(root)
            with pytest.raises(OSError) as refused:  # the driver knows the template's layers: the image has a child
                driver.remove(template.top)
            assert refused.value.errno == errno.EBUSY
        assert "big.bin" not in expected.entries and "t.bin" in expected.entries
        assert compare(_timeless(expected), _timeless(got)) == []
        assert [e.mtime_ns for e in got.entries.values()] != [None] * len(got.entries)  # the copy keeps its mtimes
    finally:
        template.image.unlink()
        assert template.image.parent.exists()
        runner.safety.remove_tree(template.image.parent)


def test_a_run_with_templates_builds_each_family_once_and_leaves_nothing(tmp_path: Path) -> None:
    require("overlay2")
    path = tmp_path / "tmpl.toml"
    path.write_text(
        SCENARIO.replace("[image]\n", "[params]\nn = [1, 2]\n[image]\n", 1).replace(
            'op = "start"\n', 'op = "start"\ncount = "${n}"\n', 1
        )
    )
    config = runner.RunConfig(
        scenarios=(str(path),),
        drivers=("overlay2",),
        results_dir=tmp_path / "res",
        work_root=tmp_path / "work",
        samples=1,
        warmup=0,
        templates=True,
    )
    doc, _ = runner.run(config)
    cells = doc["cells"]
    assert [c["status"] for c in cells] == ["ok", "ok"] and all(c["template"] for c in cells)
    assert cells[0]["image_layers_disk_bytes"] == cells[1]["image_layers_disk_bytes"]
    assert sorted(c["time_split_s"]["setup"] for c in cells)[1] > 0  # the first carries the template's build
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".layerbench-work-root"]
