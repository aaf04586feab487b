"""File capabilities (`security.capability`) are image content every driver keeps (docs/images.md, issue 20).

The image is a `docker save` archive whose base layer holds `bin/ping` with the capability
cap_net_raw+ep (a version-2 `vfs_cap_data`, as `setcap` writes it) and a second layer on top,
so a FULL driver copies the file into the child layer and again into the container. The
capability must read back, byte for byte, with os.getxattr on the mounted container and on a
fresh container of the container's commit, on every driver: the mechanism drivers
(overlay2-rootless inside its user namespace) and the engines' (containerd's snapshotters,
its diff service applying the layers; Podman's storage drivers, `podman pull` applying them).
Before the fix vfs, reflink and composefs lost it (their tree copies set
the xattrs, then lchown'd the file, and the kernel drops `security.capability` on a chown),
and zfs did (zfs-fuse refused every xattr without `--enable-xattr`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from layerbench.driver import Driver
from layerbench.images.build import build_image
from layerbench.images.image_sources import open_image
from layerbench.plugins import default_plugins
from layerbench.run import userns
from layerbench.testing import userns_session

from ..conftest import driver_on_store, require
from ..image_files import (
    D,
    F,
    docker_archive,
    tar_bytes,
)

pytestmark = [pytest.mark.mounts, pytest.mark.skipif(os.geteuid() != 0, reason="security.* xattrs need root")]

CAP = "security.capability"
CAP_NET_RAW = 13
#: struct vfs_cap_data, revision 2 with the effective bit: magic_etc, then (permitted, inheritable) x 2
NET_RAW_EP = struct.pack("<5I", 0x02000000 | 0x1, 1 << CAP_NET_RAW, 0, 0, 0)
DRIVERS = sorted(
    name for name, cls in default_plugins().registry.drivers.items() if not cls.test_only and cls.userns is False
)


def _archive(path: Path) -> Path:
    base = tar_bytes(
        D("bin/"),
        F("bin/ping", b"\x7fELF not really", 0o755, xattrs={CAP: NET_RAW_EP.decode("utf-8", "surrogateescape")}),
    )
    top = tar_bytes(D("etc/"), F("etc/hostname", b"capabilities\n"))
    return docker_archive(path, {"cap:1": [base, top]})


def _image_on(driver: Driver, archive: Path) -> str:
    return build_image(driver, open_image("docker-archive", archive))


def _capability(driver: Driver, container: str) -> bytes | None:
    root = driver.mount(container)
    try:
        assert (root / "etc/hostname").read_bytes() == b"capabilities\n"
        try:
            return os.getxattr(root / "bin/ping", CAP, follow_symlinks=False)
        except OSError:
            return None
    finally:
        driver.unmount(container)


@pytest.mark.parametrize("name", DRIVERS)
def test_a_files_capability_reaches_the_container_and_its_commit(tmp_path: Path, name: str) -> None:
    archive = _archive(tmp_path / "image.tar")
    with driver_on_store(name, tmp_path / "store") as (driver, _):
        top = _image_on(driver, archive)
        driver.create_container("c", top)
        assert _capability(driver, "c") == NET_RAW_EP, f"{name}: the container lost bin/ping's {CAP}"
        driver.commit("c", "committed")
        driver.create_container("c2", "committed")
        assert _capability(driver, "c2") == NET_RAW_EP, f"{name}: the commit lost bin/ping's {CAP}"


def test_a_files_capability_reaches_a_rootless_container(tmp_path: Path) -> None:
    """overlay2-rootless, in its user namespace: the capability the namespace's root wrote at import
    (the kernel keeps it as a v3 capability of that root) reads back in the container as written."""
    name = "overlay2-rootless"
    require(name)

    def body(driver: Driver) -> tuple[bytes | None, bytes | None]:
        driver.setup()
        try:
            driver.create_container("c", _image_on(driver, archive))
            first = _capability(driver, "c")
            driver.commit("c", "committed")
            driver.create_container("c2", "committed")
            return first, _capability(driver, "c2")
        finally:
            driver.close()

    with userns_session(default_plugins().driver(name), tmp_path / "store", 1 << 30) as driver:
        archive = _archive(driver.home.parent / "image.tar")  # where the namespace's root may read it
        got = userns.run_in_userns(body, driver, expose=[driver.home.parent])
    assert got == (NET_RAW_EP, NET_RAW_EP), got
