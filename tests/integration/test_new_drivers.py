"""fuse-overlayfs, reflink and zfs on their real mechanisms: what only those produce."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.kernel import mountinfo
from layerbench.plugins import default_plugins
from layerbench.testing import driver_session, mounts_below

from ..conftest import first_append_ns, require

pytestmark = pytest.mark.mounts
MiB = 1 << 20


def _base(driver: Driver, big: int = 64 * MiB) -> str:
    root = driver.create_layer("base", None)
    (root / "small.bin").write_bytes(os.urandom(4096))
    with open(root / "big.bin", "wb") as f:
        for _ in range(big // MiB):
            f.write(os.urandom(MiB))
    driver.seal_layer("base")
    return "base"


def _copy_up_ratio(name: str, work: Path) -> float:
    require(name)
    with driver_session(default_plugins().driver(name), work, size_bytes=1 << 30) as driver:
        image = _base(driver)
        small, big = [], []
        for i in range(3):
            driver.create_container(f"c{i}", image)
            root = driver.mount(f"c{i}")
            small.append(first_append_ns(root / "small.bin"))
            big.append(first_append_ns(root / "big.bin"))
            driver.unmount(f"c{i}")
            driver.remove(f"c{i}")
    return statistics.median(big) / statistics.median(small)


def test_fuse_overlayfs_copies_up_the_whole_file(tmp_path: Path) -> None:
    ratio = _copy_up_ratio("fuse-overlayfs", tmp_path)
    assert ratio > 10, f"fuse-overlayfs: first append to 64 MiB / 4 KiB = {ratio:.1f}"


@pytest.mark.parametrize("name", ["reflink", "zfs"])
def test_snapshot_drivers_copy_only_the_blocks_written(name: str, tmp_path: Path) -> None:
    ratio = _copy_up_ratio(name, tmp_path)
    assert ratio < 10, f"{name}: first append to 64 MiB / 4 KiB = {ratio:.1f}"


def test_reflink_containers_share_extents_with_the_image(tmp_path: Path) -> None:
    require("reflink")
    with driver_session(default_plugins().driver("reflink"), tmp_path, size_bytes=1 << 30) as driver:
        st = os.statvfs(driver.home)
        image = _base(driver, big=32 * MiB)
        os.sync()
        before = os.statvfs(driver.home)
        for i in range(10):
            driver.create_container(f"c{i}", image)
        os.sync()
        after = os.statvfs(driver.home)
        used = (before.f_bfree - after.f_bfree) * st.f_frsize
        assert used < 4 * MiB, f"10 reflink containers of a 32 MiB image took {used / MiB:.1f} MiB"
        # FIEMAP would show the same physical extents; the content is the image's
        assert (driver.mount("c9") / "big.bin").stat().st_size == 32 * MiB


def test_fuse_overlayfs_mount_is_a_fuse_daemon_and_goes_on_close(tmp_path: Path) -> None:
    require("fuse-overlayfs")
    with driver_session(default_plugins().driver("fuse-overlayfs"), tmp_path) as driver:
        _base(driver, big=MiB)
        driver.create_container("c", "base")
        root = driver.mount("c")
        fstype = next(m.fstype for m in mountinfo.mounts() if m.point == str(root))
        assert fstype == "fuse.fuse-overlayfs"
        home = driver.home
    assert not mounts_below(home)


def test_zfs_child_is_a_clone_and_the_daemon_is_gone_after_close(tmp_path: Path) -> None:
    require("zfs")
    with driver_session(default_plugins().driver("zfs"), tmp_path) as driver:
        _base(driver, big=MiB)
        driver.create_container("c", "base")
        info = driver.inspect("c")
        assert info["Origin"] == f"{driver.pool}/base@c"  # type: ignore[attr-defined]
        assert (driver.mount("c") / "big.bin").stat().st_size == MiB
        pid = driver.daemon_pid  # type: ignore[attr-defined]
        assert pid is not None and Path(f"/proc/{pid}/exe").resolve() == Path("/usr/sbin/zfs-fuse")
        pool = driver.pool  # type: ignore[attr-defined]
    assert not os.path.exists(f"/proc/{pid}/task") or all(
        Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
        for t in os.listdir(f"/proc/{pid}/task")
    )
    assert pool not in subprocess.run(["findmnt", "-rn", "-o", "SOURCE"], capture_output=True, text=True).stdout
