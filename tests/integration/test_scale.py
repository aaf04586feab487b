"""Scale: overlay2 at the kernel's 500-layer limit, hundreds of containers from one image,
images of 100,000 files. Physics only (counts, EINVAL, disk growth bounds); the figures
themselves come from benchmarks/scale.py and docs/performance.md.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec, synthetic_image
from layerbench.kernel import mountinfo, syscalls
from layerbench.run.backing import Usage

from ..conftest import driver_on_store

pytestmark = pytest.mark.mounts
KiB, MiB = 1 << 10, 1 << 20
KERNEL_MAX_LOWERS = 500  # OVL_MAX_STACK
CONTAINERS = 1000  # the figure; a few seconds per driver
MANY_FILES = 100_000


def _usage(path: Path) -> Usage:
    syscalls.syncfs(str(path))
    st = os.statvfs(path)
    return Usage((st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree)


def _stack(driver: Driver, layers: int) -> str:
    """`layers` layers: the bottom holds `bottom.txt`, every other one a file of its own."""
    files = [(FileSpec("bottom.txt", 6, seed=1),)] + [(FileSpec(f"l{i}.txt", 1, seed=i + 1),) for i in range(1, layers)]
    return build_image(driver, files_image(files), ids=[f"l{i}" for i in range(layers)])


def test_overlay2_mounts_500_layers_and_reads_the_bottom_file_and_refuses_a_501st(work: Path) -> None:
    with driver_on_store("overlay2", work, 512 * MiB) as (driver, _):
        if not driver.new_api:  # type: ignore[attr-defined]
            pytest.skip("the kernel has no fsconfig lowerdir+: the page-limited mount(2) stops at 128 layers")
        top = _stack(driver, KERNEL_MAX_LOWERS)
        driver.create_container("c500", top)
        root = driver.mount("c500")
        try:
            assert len(driver.inspect("c500")["LowerDir"].split(":")) == KERNEL_MAX_LOWERS
            bottom = (root / "bottom.txt").read_bytes()
            assert bottom == (driver.home / "l0" / "diff" / "bottom.txt").read_bytes() and len(bottom) == 6
            assert (root / f"l{KERNEL_MAX_LOWERS - 1}.txt").exists()
            assert len(os.listdir(root)) == KERNEL_MAX_LOWERS  # one file per layer, all merged
        finally:
            driver.unmount("c500")
            driver.remove("c500")

        build_image(driver, files_image([(FileSpec("l500.txt", 1, seed=501),)]), ids=["l500"], parent=top)
        driver.create_container("c501", "l500")
        try:
            with pytest.raises(OSError) as failed:
                driver.mount("c501")
            assert failed.value.errno == errno.EINVAL, f"a 501st lower layer should fail with EINVAL: {failed.value}"
            assert not os.path.ismount(driver.home / "c501" / "merged")
        finally:
            driver.remove("c501")


@pytest.mark.parametrize("name, per_container_bound", [("overlay2", 64 * KiB), ("btrfs", 160 * KiB)])
def test_a_thousand_containers_share_one_image(work: Path, name: str, per_container_bound: int) -> None:
    """Each container costs a few KiB of metadata, not a copy of the 4 MiB image."""
    image = synthetic_image(2, 200, 4 * MiB, seed=3)
    with driver_on_store(name, work, 1024 * MiB) as (driver, _):
        parent = build_image(driver, image, ids=[f"l{i}" for i in range(image.layer_count)])
        probe = image.file_paths()[0]
        before = _usage(driver.home)
        roots = []
        for i in range(CONTAINERS):
            driver.create_container(f"c{i}", parent)
            roots.append(driver.mount(f"c{i}"))
        grown = _usage(driver.home).bytes - before.bytes
        try:
            assert len(set(roots)) == CONTAINERS
            assert all((r / probe).exists() for r in roots)
            if name == "overlay2":
                mine = [
                    m for m in mountinfo.mounts() if m.fstype == "overlay" and m.point.startswith(f"{driver.home}/c")
                ]
                assert len(mine) == CONTAINERS
            (roots[0] / "only-in-c0").write_bytes(b"x")
            assert not (roots[-1] / "only-in-c0").exists()
            assert 0 < grown < CONTAINERS * per_container_bound, f"{CONTAINERS} containers took {grown} bytes"
            assert grown < CONTAINERS * image.total_bytes // 10  # nothing like a copy each
        finally:
            for i in reversed(range(CONTAINERS)):
                driver.unmount(f"c{i}")
                driver.remove(f"c{i}")


@pytest.mark.parametrize("name", ["overlay2", "btrfs", "vfs"])
def test_an_image_of_100k_files_starts_and_every_file_is_there(work: Path, name: str) -> None:
    image = synthetic_image(1, MANY_FILES, 8 * MiB, seed=5)
    with driver_on_store(name, work, 2048 * MiB, inodes=4 * MANY_FILES) as (driver, _):
        build_image(driver, image, ids=["l0"])
        before = _usage(driver.home)
        driver.create_container("c0", "l0")
        root = driver.mount("c0")
        try:
            after = _usage(driver.home)
            files = sum(len(names) for _, _, names in os.walk(root))
            assert files == MANY_FILES
            grown = after.bytes - before.bytes
            if name == "vfs":  # a full copy: every inode and every byte again
                assert after.inodes is not None and before.inodes is not None  # ext4 counts inodes
                assert after.inodes - before.inodes >= MANY_FILES
                assert grown >= image.total_bytes
            else:  # the container shares the image: its own layer only
                assert grown < 4 * MiB, f"{name}: one container of a 100k-file image took {grown} bytes"
        finally:
            driver.unmount("c0")
            driver.remove("c0")
