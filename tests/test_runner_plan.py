"""The disk estimate a cell's store is sized by: every step that writes counts, `count` included."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbench.plugins import default_plugins
from layerbench.run.estimates import estimate_bytes, estimate_inodes
from layerbench.run.plan import Cell
from layerbench.scenario import load_scenario

BASE = """
name = "plan"
description = "A small image, a container, then the step under test."
[image]
layers = 2
files = 40
bytes = 400000
[[step]]
op = "start"
"""


def _cell(tmp_path: Path, extra: str, driver: str = "overlay2") -> Cell:
    path = tmp_path / f"plan{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(BASE + extra)
    s = load_scenario(path)
    (params,) = s.param_sets()
    return Cell(s, default_plugins().driver(driver), params, "ext4")


@pytest.mark.parametrize("driver", ["overlay2", "vfs", "btrfs"])
def test_a_write_with_count_raises_the_estimate_by_count_times_bytes(tmp_path: Path, driver: str) -> None:
    n, b = 500, 100_000
    without = _cell(tmp_path, "", driver)
    with_writes = _cell(tmp_path, f'[[step]]\nop = "write"\npath = "new/f{{i}}"\ncount = {n}\nbytes = {b}\n', driver)
    assert estimate_bytes(with_writes) - estimate_bytes(without) >= n * b
    assert estimate_inodes(with_writes) - estimate_inodes(without) >= n


@pytest.mark.parametrize(
    ("step", "at_least"),
    [
        ('op = "append"\nfraction = 0.5\nbytes = 1000000', 20 * 1_000_000),  # half of 40 files
        ('op = "overwrite"\nglob = "**"\nbytes = 100000', 40 * 100_000),  # a glob: every file, at most
        ('op = "truncate"\npath = "x"\nsize = 50000000', 50_000_000),
        ('op = "write"\npath = "one"\nbytes = 30000000', 30_000_000),
    ],
)
def test_every_op_that_writes_counts(tmp_path: Path, step: str, at_least: int) -> None:
    assert estimate_bytes(_cell(tmp_path, f"[[step]]\n{step}\n")) - estimate_bytes(_cell(tmp_path, "")) >= at_least


def test_a_commit_after_writes_counts_them_again(tmp_path: Path) -> None:
    write = '[[step]]\nop = "write"\npath = "w{i}"\ncount = 100\nbytes = 1000000\n'
    plain = estimate_bytes(_cell(tmp_path, write))
    committed = estimate_bytes(_cell(tmp_path, write + '[[step]]\nop = "commit"\n'))
    assert committed - plain >= 100 * 1_000_000


def test_steps_that_write_nothing_add_nothing(tmp_path: Path) -> None:
    base = estimate_bytes(_cell(tmp_path, ""))
    assert estimate_bytes(_cell(tmp_path, '[[step]]\nop = "stat"\nglob = "**"\n')) == base
    assert estimate_bytes(_cell(tmp_path, '[[step]]\nop = "read"\nfraction = 1\n')) == base
