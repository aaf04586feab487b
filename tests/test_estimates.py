"""What a cell's store is sized by: the image on its driver, the containers, every op's footprint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from layerbench import ops
from layerbench.ops import OPS, Footprint
from layerbench.plugins import default_plugins
from layerbench.run import steps
from layerbench.run.estimates import estimate_bytes, estimate_inodes
from layerbench.run.plan import Cell
from layerbench.scenario import load_scenario

IMAGE = """
name = "sized"
description = "An image, containers, then the steps under test."
[image]
layers = 4
files = 50
bytes = 2000000
[[step]]
op = "start"
count = {containers}
"""


def _cell(tmp_path: Path, driver: str, containers: int = 1, extra: str = "") -> Cell:
    path = tmp_path / f"sized{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(IMAGE.format(containers=containers) + extra)
    s = load_scenario(path)
    return Cell(s, default_plugins().driver(driver), s.param_sets()[0], "ext4")


def _writes(n: int, size: int) -> str:
    return f'[[step]]\nop = "write"\npath = "new/f{{i}}"\ncount = {n}\nbytes = {size}\n'


@pytest.mark.parametrize(("n", "size"), [(200, 50_000), (1000, 1_000_000)])
def test_a_write_heavy_cell_grows_by_count_times_size(tmp_path: Path, n: int, size: int) -> None:
    once = estimate_bytes(_cell(tmp_path, "overlay2", extra=_writes(n, size)))
    twice = estimate_bytes(_cell(tmp_path, "overlay2", extra=_writes(2 * n, size)))
    # n more files of `size` bytes: at least what they hold, and not wildly more (margin and inodes)
    assert n * size <= twice - once <= 1.5 * n * size
    assert (
        estimate_inodes(_cell(tmp_path, "overlay2", extra=_writes(2 * n, size)))
        - estimate_inodes(_cell(tmp_path, "overlay2", extra=_writes(n, size)))
        >= n
    )


@pytest.mark.parametrize("containers", [1, 3, 8])
def test_an_image_on_a_copy_driver_counts_a_whole_copy_per_layer_and_container(tmp_path: Path, containers: int) -> None:
    cell = _cell(tmp_path, "vfs", containers)  # COPY, FULL layers: each layer and container holds the image
    image = cell.image
    assert estimate_bytes(cell) >= image.total_bytes * (image.layer_count + containers)
    more = _cell(tmp_path, "vfs", containers + 1)
    assert estimate_bytes(more) - estimate_bytes(cell) >= image.total_bytes


def test_a_union_driver_counts_the_image_once_not_per_layer(tmp_path: Path) -> None:
    union, copy = _cell(tmp_path, "overlay2"), _cell(tmp_path, "vfs")
    total, layers = union.image.total_bytes, union.image.layer_count
    assert estimate_bytes(copy) - estimate_bytes(union) >= total * (layers - 1)


def test_the_estimate_is_each_ops_footprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The op's own footprint decides: give `stat` one and the estimate grows by it."""
    stat = '[[step]]\nop = "stat"\npath = "x"\n'
    before = estimate_bytes(_cell(tmp_path, "overlay2", extra=stat))
    grown = dataclasses.replace(OPS["stat"], footprint=lambda args, image: Footprint(written_bytes=10**9))
    monkeypatch.setitem(OPS, "stat", grown)
    assert estimate_bytes(_cell(tmp_path, "overlay2", extra=stat)) - before >= 10**9


def test_footprints_add_up() -> None:
    a = Footprint(containers=2, written_bytes=10, imports=("x",))
    b = Footprint(containers=1, commits=1, imports=("x", "y"))
    assert a + b == Footprint(containers=3, commits=1, written_bytes=10, imports=("x", "x", "y"))


def test_every_op_has_one_definition_and_one_behaviour() -> None:
    assert list(OPS) == [op.name for op in ops._OPS]  # no name defined twice
    assert steps.BEHAVIOUR.keys() == OPS.keys()


def test_an_ops_defaults_size_what_a_step_leaves_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overwrite = '[[step]]\nop = "overwrite"\nglob = "**"\n'  # no bytes: the op's default
    before = estimate_bytes(_cell(tmp_path, "overlay2", extra=overwrite))
    monkeypatch.setitem(OPS, "overwrite", dataclasses.replace(OPS["overwrite"], defaults={"bytes": 10**6}))
    assert estimate_bytes(_cell(tmp_path, "overlay2", extra=overwrite)) - before >= 50 * (10**6 - 4)


@pytest.mark.parametrize("driver", ["overlay2", "vfs", "btrfs"])
def test_a_write_with_count_raises_the_estimate_by_count_times_bytes(tmp_path: Path, driver: str) -> None:
    n, b = 500, 100_000
    without = _cell(tmp_path, driver)
    with_writes = _cell(tmp_path, driver, extra=_writes(n, b))
    assert estimate_bytes(with_writes) - estimate_bytes(without) >= n * b
    assert estimate_inodes(with_writes) - estimate_inodes(without) >= n


@pytest.mark.parametrize(
    ("step", "at_least"),
    [
        ('op = "append"\nfraction = 0.5\nbytes = 1000000', 25 * 1_000_000),  # half of 50 files
        ('op = "overwrite"\nglob = "**"\nbytes = 100000', 50 * 100_000),  # a glob: every file, at most
        ('op = "truncate"\npath = "x"\nsize = 50000000', 50_000_000),
        ('op = "write"\npath = "one"\nbytes = 30000000', 30_000_000),
    ],
)
def test_every_op_that_writes_counts(tmp_path: Path, step: str, at_least: int) -> None:
    grown = estimate_bytes(_cell(tmp_path, "overlay2", extra=f"[[step]]\n{step}\n"))
    assert grown - estimate_bytes(_cell(tmp_path, "overlay2")) >= at_least


def test_a_commit_after_writes_counts_them_again(tmp_path: Path) -> None:
    write = '[[step]]\nop = "write"\npath = "w{i}"\ncount = 100\nbytes = 1000000\n'
    plain = estimate_bytes(_cell(tmp_path, "overlay2", extra=write))
    committed = estimate_bytes(_cell(tmp_path, "overlay2", extra=write + '[[step]]\nop = "commit"\n'))
    assert committed - plain >= 100 * 1_000_000


def test_steps_that_write_nothing_add_nothing(tmp_path: Path) -> None:
    base = estimate_bytes(_cell(tmp_path, "overlay2"))
    assert estimate_bytes(_cell(tmp_path, "overlay2", extra='[[step]]\nop = "stat"\nglob = "**"\n')) == base
    assert estimate_bytes(_cell(tmp_path, "overlay2", extra='[[step]]\nop = "read"\nfraction = 1\n')) == base
