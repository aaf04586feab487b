"""A hostile image cannot touch the host (docs/images.md, threat model), on the real drivers.

The image is a `docker save` archive the test writes: a block device node `dev/disk`
pointing at a loop device the test makes (its backing file is the host target), a
character device 1:5 (/dev/zero), a fifo, a setuid-root file and a symlink loop
(`a -> .`, `b -> .`). Scenarios overwrite, write and read `dev/*` and `**` through
the runner; the loop device's backing file must stay byte-for-byte the same, every
cell must end long before its time limit, and every mount must be nodev,nosuid.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from layerbench.driver import Driver
from layerbench.images.image_sources import open_image
from layerbench.kernel import mountinfo, syscalls
from layerbench.plugins import default_plugins
from layerbench.run import userns
from layerbench.run.runner import RunConfig, run
from layerbench.testing import userns_session

from ..conftest import driver_on_store, require
from ..image_files import (
    DEV,
    D,
    F,
    S,
    docker_archive,
    tar_bytes,
)

pytestmark = pytest.mark.mounts
MiB = 1 << 20
DRIVERS = ("overlay2", "vfs", "btrfs")
HANG_S = 30  # far below the cells' 60 s limit and the 1,800 s default: a hang detector, not a speed target


@contextmanager
def loop_device(work: Path) -> Iterator[tuple[str, Path]]:
    """A loop device over a small sparse file with random first bytes; detached after errors too."""
    if os.geteuid() != 0:
        pytest.skip("loop devices and device nodes need root")
    backing = work / "host-disk.img"
    with open(backing, "wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(8 * MiB)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True)
    device = dev.stdout.strip()
    try:
        yield device, backing
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def hostile_archive(path: Path, device: str) -> Path:
    """A `docker save` archive of one layer holding every hostile entry, and two regular files."""
    rdev = os.stat(device).st_rdev
    layer = tar_bytes(
        D("dev/"),
        DEV("dev/disk", tarfile.BLKTYPE, os.major(rdev), os.minor(rdev), 0o666),
        DEV("dev/zero", tarfile.CHRTYPE, 1, 5, 0o666),
        DEV("dev/fifo", tarfile.FIFOTYPE, mode=0o666),
        D("bin/"),
        F("bin/su", b"#!/bin/sh\nid -u\n", 0o4755),
        D("data/"),
        F("data/file", b"regular"),
        S("a", "."),
        S("b", "."),
    )
    return docker_archive(path, {"hostile:1": [layer]})


SCENARIO = """
name = "hostile"
description = "Overwrite, write and read the device nodes, the fifo and everything under a symlink loop."

[params]
sel = ["dev/*", "**"]

[image]
source = "docker-archive"
path = "hostile.tar"

[repeat]
samples = 1
warmup = 0
min_time_s = 0.001

[[step]]
op = "start"

[[step]]
op = "overwrite"
glob = "${sel}"
measure = "overwrite_ns"
allow_errors = ["ENOENT"]

[[step]]
op = "write"
glob = "${sel}"
measure = "write_ns"
bytes = 4096
allow_errors = ["ENOENT"]

[[step]]
op = "read"
glob = "${sel}"
measure = "read_ns"
allow_errors = ["ENOENT"]
"""

STRICT = """
name = "hostile-strict"
description = "Read /dev/zero by its path, without allowing an error: the cell fails with one line."

[image]
source = "docker-archive"
path = "hostile.tar"

[repeat]
samples = 1
warmup = 0
min_time_s = 0.001

[[step]]
op = "start"

[[step]]
op = "read"
path = "dev/zero"
"""


def test_device_nodes_fifos_and_symlink_loops_in_an_image_leave_the_host_alone(tmp_path: Path) -> None:
    for name in DRIVERS:
        require(name)
    with loop_device(tmp_path) as (device, target):
        before = sha256(target)
        hostile_archive(tmp_path / "hostile.tar", device)
        (tmp_path / "hostile.toml").write_text(SCENARIO)
        (tmp_path / "hostile-strict.toml").write_text(STRICT)
        doc, _ = run(
            RunConfig(
                scenarios=(str(tmp_path / "hostile.toml"), str(tmp_path / "hostile-strict.toml")),
                drivers=DRIVERS,
                results_dir=tmp_path / "results",
                work_root=tmp_path / "work",
                cell_timeout_s=60,
                order="planned",
            )
        )
        after = sha256(target)
    assert after == before, "a step wrote through the image's device node to the host's loop device"
    cells = {(c["scenario"], c["driver"], c["params"].get("sel")): c for c in doc["cells"]}
    assert len(cells) == 3 * len(DRIVERS)
    for (scenario, driver, sel), c in cells.items():
        print(f"{scenario} {driver} sel={sel}: {c['status']} in {c['duration_s']} s, samples {c.get('samples')}")
        assert c["duration_s"] < HANG_S, f"{scenario} {driver} {sel}: {c['duration_s']} s"
        if scenario == "hostile-strict":
            assert c["status"] == "error"
            error = c["error"]
            assert "\n" not in error and "path 'dev/zero' selects no regular file (skipped 1 char device)" in error
            continue
        assert c["status"] == "ok", f"{driver} {sel}: {c['error']}"
        said = {"skipped 1 block device", "skipped 1 char device", "skipped 1 fifo"}
        if sel == "dev/*":  # nothing regular there: each step is an allowed ENOENT, nothing opened
            said.add("ENOENT")
            assert not {"overwrite_ns", "write_ns", "read_ns"} & set(c["metrics"])
        else:  # the two regular files were written and read; the loop's symlinks listed, never entered
            said |= {"skipped 2 symlinks", "skipped 3 directories"}
            assert {"overwrite_ns", "write_ns", "read_ns"} <= set(c["metrics"])
            assert set(c["metrics"]["written_bytes"]["samples"]) == {2 * 4 + 2 * 4096}
        n = c["samples"]  # an outcome is counted once per sample
        expected = {name: n for name in said}
        assert c["outcomes"] == {f"step[{i}] {op}": expected for i, op in ((1, "overwrite"), (2, "write"), (3, "read"))}


# -- the mounts themselves ----------------------------------------------------------------------


def _mount_options(below: Path) -> dict[str, set[str]]:
    """Per-mount options (mountinfo field 6) of every mount at or below `below`, by mount point."""
    points = set(mountinfo.points_below(str(below)))
    return {m.point: set(m.options) for m in mountinfo.mounts() if m.point in points}


def _container_of(driver: Driver, archive: Path) -> Path:
    image = open_image("docker-archive", archive)
    image.apply(0, driver.create_layer("l0", None), driver.layer_format)
    driver.seal_layer("l0")
    driver.create_container("c0", "l0")
    return driver.mount("c0")


@pytest.mark.parametrize("name", ["overlay2", "vfs", "btrfs", "fuse-overlayfs", "zfs"])
def test_every_mount_a_driver_makes_is_nodev_nosuid_and_the_device_node_is_inert(name: str, tmp_path: Path) -> None:
    with loop_device(tmp_path) as (device, target), driver_on_store(name, tmp_path / "store") as (driver, store):
        before = sha256(target)
        root = _container_of(driver, hostile_archive(tmp_path / "hostile.tar", device))
        try:
            mounts = _mount_options(store.mountpoint)
            assert str(store.mountpoint) in mounts  # the store itself (a "dir" store is bound onto itself)
            if name in ("overlay2", "fuse-overlayfs", "zfs"):
                assert str(root) in mounts  # the container is a mount of its own
            unsafe = {p: o for p, o in mounts.items() if not {"nodev", "nosuid"} <= o}
            assert not unsafe, f"mounts without nodev,nosuid: {unsafe}"
            su = os.lstat(root / "bin" / "su")
            assert su.st_mode & stat.S_ISUID and su.st_uid == 0  # the image's setuid-root file is there ...
            assert os.statvfs(root).f_flag & os.ST_NOSUID  # ... on a mount where the bit does nothing
            disk = os.lstat(root / "dev" / "disk")
            assert stat.S_ISBLK(disk.st_mode) and disk.st_rdev == os.stat(device).st_rdev
            with pytest.raises(PermissionError):  # nodev: even an open of the node is refused by the kernel
                os.open(root / "dev" / "disk", os.O_WRONLY)
        finally:
            if name in ("overlay2", "fuse-overlayfs"):
                driver.unmount("c0")
        assert sha256(target) == before


def test_the_rootless_overlay_mount_is_nodev_nosuid(tmp_path: Path) -> None:
    """overlay2-rootless mounts in its user namespace's child: read that child's mountinfo."""
    require("overlay2-rootless")

    def body(driver: Driver) -> dict[str, Any]:
        driver.setup()
        try:
            root = driver.create_layer("l0", None)
            (root / "f").write_bytes(b"f")
            driver.seal_layer("l0")
            driver.create_container("c0", "l0")
            merged = driver.mount("c0")
            try:
                return {p: sorted(o) for p, o in _mount_options(merged).items()}
            finally:
                driver.unmount("c0")
        finally:
            driver.close()

    with userns_session(default_plugins().driver("overlay2-rootless"), tmp_path / "store", 1 << 30) as driver:
        mounts = userns.run_in_userns(body, driver, expose=[driver.home.parent], timeout_s=60)
    assert len(mounts) == 1, mounts
    assert {"nodev", "nosuid"} <= set(next(iter(mounts.values())))


def test_bind_and_tmpfs_volumes_are_nodev_nosuid_even_from_a_suid_dev_directory(tmp_path: Path) -> None:
    """A bind mount takes its source's flags, not mount(2)'s: syscalls.mount remounts it nodev,nosuid
    (read-only kept when asked). The source here is a plain directory on a mount without them."""
    if os.geteuid() != 0:
        pytest.skip("mounts need root")
    host, bind, ro, tmpfs = (tmp_path / n for n in ("host", "bind", "ro", "tmpfs"))
    for d in (host, bind, ro, tmpfs):
        d.mkdir()
    if os.statvfs(host).f_flag & (os.ST_NODEV | os.ST_NOSUID):
        pytest.skip("the temp directory's own mount is nodev or nosuid: a bind would inherit it")
    made = []
    try:
        syscalls.mount(str(host), str(bind), "", syscalls.MS_BIND)
        made.append(bind)
        syscalls.mount(str(host), str(ro), "", syscalls.MS_BIND | syscalls.MS_RDONLY)
        made.append(ro)
        syscalls.mount("tmpfs", str(tmpfs), "tmpfs", 0, "mode=0755")
        made.append(tmpfs)
        mounts = _mount_options(tmp_path)
        for point in made:
            assert {"nodev", "nosuid"} <= mounts[str(point)], (point, mounts[str(point)])
        assert "ro" in mounts[str(ro)] and "rw" in mounts[str(bind)]
    finally:
        for point in reversed(made):
            syscalls.umount(str(point))
