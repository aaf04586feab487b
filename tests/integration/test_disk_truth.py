"""layerbench's disk figures against tools nobody here wrote, on live stores.

Allowance: 1% or 256 KiB, whichever is larger. The walk counts file data (each
physical extent once) and the blocks of directories and symlinks; filesystem
metadata (journals, inode tables, b-trees, btrfs inline data) is the statvfs
figure's alone, which is why the XFS comparison uses few large reflinked files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.images.build import build_image
from layerbench.images.image import synthetic_image
from layerbench.plugins import default_plugins
from layerbench.report.table import comparison_table
from layerbench.run import backing
from layerbench.run.runner import Cell, run_cell
from layerbench.scenario import load_scenario

from ..conftest import driver_on_store, require

pytestmark = pytest.mark.mounts
MiB = 1 << 20


def close(ours: int, theirs: int) -> bool:
    return abs(ours - theirs) <= max(theirs // 100, 256 << 10)


def tool(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed")
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def populate(driver: Driver, containers: int) -> None:
    """An image of 3 layers (300 files, 24 MB), `containers` containers, each writing 1 MiB and changing a file."""
    image = synthetic_image(layers=3, files=300, total_bytes=24_000_000, seed=3)
    parent = build_image(driver, image, ids=[f"l{i}" for i in range(image.layer_count)])
    victim = image.file_paths()[0]
    for c in range(containers):
        driver.create_container(f"c{c}", parent)
        root = driver.mount(f"c{c}")
        (root / "new.bin").write_bytes(os.urandom(MiB))
        with open(root / victim, "r+b") as f:
            f.write(b"changed")
    for c in range(containers):
        driver.unmount(f"c{c}")


@pytest.mark.parametrize("name", ["overlay2", "vfs"])
def test_walk_equals_du_on_ext4(name: str, work: Path) -> None:
    with driver_on_store(name, work) as (driver, store):
        assert store.fstype == "ext4"
        populate(driver, 4)
        ours = backing.allocated_bytes(store.mountpoint)
        du = int(tool(["du", "-sxB1", str(store.mountpoint)]).split()[0])
    assert close(ours, du), f"walk {ours} vs du -sxB1 {du}"


def test_walk_equals_btrfs_filesystem_du(work: Path) -> None:
    """Snapshots share extents: the walk counts them once, as btrfs's exclusive + set shared does,
    while a per-inode count (du) counts them once per snapshot."""
    with driver_on_store("btrfs", work) as (driver, store):
        populate(driver, 5)
        ours = backing.allocated_bytes(store.mountpoint)
        out = tool(["btrfs", "filesystem", "du", "-s", "--raw", str(store.mountpoint)]).splitlines()
        total, exclusive, shared = (int(x) for x in out[-1].split()[:3])
        # without -x: every subvolume has a device number of its own (the containers are unmounted)
        per_inode = int(tool(["du", "-sB1", str(store.mountpoint)]).split()[0])
    assert close(ours, exclusive + shared), f"walk {ours} vs btrfs exclusive {exclusive} + set shared {shared}"
    assert per_inode > 4 * ours and total > 4 * ours  # 3 layers + 5 containers see the same extents


def test_walk_delta_equals_df_on_xfs_with_reflinks(work: Path) -> None:
    """Eight reflinked copies of a 32 MiB file (cp --reflink=always), one of them partly rewritten:
    the walk's delta is what the filesystem's own accounting (df) says was used."""
    if (why := backing.unavailable("xfs")) is not None:
        pytest.skip(why)
    with backing.BackingStore(work, "xfs", 512 * MiB) as mnt:

        def used() -> int:
            os.sync()
            return int(tool(["df", "-B1", "--output=used", str(mnt)]).split()[-1])

        df0, walk0 = used(), backing.allocated_bytes(mnt)
        (mnt / "orig.bin").write_bytes(os.urandom(32 * MiB))
        for i in range(8):
            tool(["cp", "--reflink=always", str(mnt / "orig.bin"), str(mnt / f"copy{i}.bin")])
        with open(mnt / "copy3.bin", "r+b") as f:
            f.seek(4 * MiB)
            f.write(os.urandom(2 * MiB))
        walk = backing.allocated_bytes(mnt) - walk0
        df = used() - df0
    assert close(walk, df), f"walk delta {walk} vs df delta {df}"
    assert 34 * MiB <= walk < 35 * MiB  # one 32 MiB extent set and the 2 MiB rewritten, not 9 x 32 MiB


USAGE = """
name = "usage-test"
description = "one container, then the store's usage"
[image]
files = 20
bytes = 1_000_000
[repeat]
samples = 1
warmup = 0
[[step]]
op = "start"
[[step]]
op = "usage"
"""


def test_btrfs_has_no_inode_count_and_the_table_says_n_a(tmp_path: Path) -> None:
    """statvfs on btrfs reports 0 of 0 inodes (they are allocated on demand): not a measured 0."""
    require("btrfs")
    require("overlay2")
    path = tmp_path / "usage-test.toml"
    path.write_text(USAGE)
    s = load_scenario(path)
    plugins = default_plugins()
    cells = [
        run_cell(Cell(s, plugins.driver(name), {}, fs), tmp_path / name)
        for name, fs in (("btrfs", "btrfs"), ("overlay2", "ext4"))
    ]
    assert [c["status"] for c in cells] == ["ok", "ok"], [c["error"] for c in cells]
    assert "inodes" not in cells[0]["metrics"] and cells[1]["metrics"]["inodes"]["samples"][0] > 0
    row = next(line.split() for line in comparison_table({"cells": cells}).splitlines() if " inodes " in line)
    assert row[2] == "n/a"  # columns: params, metric, btrfs, overlay2
