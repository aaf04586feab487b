"""An image cannot steer a storage mechanism through the xattrs it reads as its own (issue 20).

Each test is a `docker save` archive whose top layer carries one of fuse-overlayfs's own
metadata xattrs (its sources: `user.fuseoverlayfs.*`, `security.fuseoverlayfs.*`,
`user.containers.*`), imported and mounted on the real fuse-overlayfs driver. Before the
filter (images/layer_encoding.MECHANISM_XATTRS) each attack worked: a lower directory's
files hidden, a 0644 file shown setuid root, a file showing a host path's inode number,
one file reading another's bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.analysis import results
from layerbench.cli import main
from layerbench.driver import Driver
from layerbench.images.build import build_image
from layerbench.images.image_sources import open_image
from layerbench.images.layer_encoding import mechanism_xattr

from ..conftest import ROOT, driver_on_store, require
from ..image_files import (
    D,
    F,
    docker_archive,
    tar_bytes,
)

pytestmark = [pytest.mark.mounts, pytest.mark.skipif(not ROOT, reason="trusted and security xattrs need root")]

LOWER = tar_bytes(D("hidden/"), F("hidden/secret", b"lower bytes"), F("plain", b"plain"))


def _container(driver: Driver, archive: Path) -> Path:
    """The archive's layers on `driver`, a container of them, mounted."""
    image = open_image("docker-archive", archive)
    driver.create_container("c", build_image(driver, image, ids=[f"l{i}" for i in range(image.layer_count)]))
    return driver.mount("c")


def test_the_fuse_overlayfs_opaque_xattr_does_not_hide_lower_files(tmp_path: Path) -> None:
    top = tar_bytes(D("hidden/", xattrs={"user.fuseoverlayfs.opaque": "y"}), F("hidden/new", b"upper"))
    archive = docker_archive(tmp_path / "image.tar", {"x:1": [LOWER, top]})
    with driver_on_store("fuse-overlayfs", tmp_path / "store") as (driver, _):
        root = _container(driver, archive)
        try:
            assert sorted(os.listdir(root / "hidden")) == ["new", "secret"]
            assert (root / "hidden" / "secret").read_bytes() == b"lower bytes"
        finally:
            driver.unmount("c")


OVERRIDES = [f"{ns}.override_stat" for ns in ("user.fuseoverlayfs", "security.fuseoverlayfs", "user.containers")]


@pytest.mark.parametrize("name", OVERRIDES)
def test_an_override_stat_xattr_does_not_show_a_plain_file_setuid_root(tmp_path: Path, name: str) -> None:
    # fuse-overlayfs honours the override in a layer whose root carries it: "uid:gid:mode"
    top = tar_bytes(
        D("./", xattrs={name: "0:0:0755"}),
        F("tool", b"#!/bin/sh\n", 0o644, uid=1000, gid=1000, xattrs={name: "0:0:4755"}),
    )
    archive = docker_archive(tmp_path / "image.tar", {"x:1": [LOWER, top]})
    with driver_on_store("fuse-overlayfs", tmp_path / "store") as (driver, _):
        root = _container(driver, archive)
        try:
            st = os.lstat(root / "tool")
            assert stat.S_IMODE(st.st_mode) == 0o644 and (st.st_uid, st.st_gid) == (1000, 1000)
            assert name not in os.listxattr(root / "tool", follow_symlinks=False)
        finally:
            driver.unmount("c")


def test_the_fuse_overlayfs_origin_xattr_does_not_take_a_host_paths_inode(tmp_path: Path) -> None:
    host = Path("/etc/hostname")
    up = "/".join([".."] * 32) + str(host)  # relative to a lower layer's root: fuse-overlayfs looks it up there
    top = tar_bytes(F("probe", b"x", xattrs={"user.fuseoverlayfs.origin": up}))
    archive = docker_archive(tmp_path / "image.tar", {"x:1": [LOWER, top]})
    with driver_on_store("fuse-overlayfs", tmp_path / "store") as (driver, _):
        root = _container(driver, archive)
        try:
            assert os.lstat(root / "probe").st_ino != os.stat(host).st_ino
            assert "user.fuseoverlayfs.origin" not in os.listxattr(root / "probe", follow_symlinks=False)
        finally:
            driver.unmount("c")


def test_an_origin_xattr_does_not_make_one_file_read_anothers_bytes(tmp_path: Path) -> None:
    """fuse-overlayfs looks a file up in the layers below under the path its origin xattr names and
    takes that file's inode: both paths became one inode, and `probe` read `hidden/secret`'s bytes
    (seen with the filter removed: b"lower bytes")."""
    name = "user.fuseoverlayfs.origin"
    top = tar_bytes(F("probe", b"the image's own bytes", xattrs={name: "hidden/secret"}))
    archive = docker_archive(tmp_path / "image.tar", {"x:1": [LOWER, top]})
    with driver_on_store("fuse-overlayfs", tmp_path / "store") as (driver, _):
        root = _container(driver, archive)
        try:
            assert (root / "hidden" / "secret").read_bytes() == b"lower bytes"
            assert (root / "probe").read_bytes() == b"the image's own bytes"
            assert os.lstat(root / "probe").st_ino != os.lstat(root / "hidden" / "secret").st_ino
            assert name not in os.listxattr(root / "probe", follow_symlinks=False)
        finally:
            driver.unmount("c")
        # the dropped state on disk: the layer's file (overlay2's layout, <id>/diff) carries no origin
        assert name not in os.listxattr(driver.home / "l1" / "diff" / "probe", follow_symlinks=False)


SCENARIO = """
name = "opaque"
description = "Start a container of an image whose top layer carries fuse-overlayfs's opaque xattr."
[image]
source = "docker-archive"
path = "image.tar"
[repeat]
samples = 1
warmup = 0
[[step]]
op = "start"
"""


def test_a_run_records_and_says_what_the_image_import_skipped(tmp_path: Path) -> None:
    """The xattr the import drops is in the cell's results record and in one line at the end of the run."""
    top = tar_bytes(D("hidden/", xattrs={"user.fuseoverlayfs.opaque": "y"}), F("hidden/new", b"upper"))
    docker_archive(tmp_path / "image.tar", {"x:1": [LOWER, top]})
    (tmp_path / "opaque.toml").write_text(SCENARIO)
    require("fuse-overlayfs")
    where = ["--results-dir", str(tmp_path / "res"), "--work-root", str(tmp_path / "work")]
    r = CliRunner().invoke(
        main, ["run", str(tmp_path / "opaque.toml"), "-d", "fuse-overlayfs", "--target-ci", "0", *where]
    )
    assert r.exit_code == 0, r.stderr
    [path] = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)
    results.validate(doc)  # the schema takes the record
    [cell] = doc["cells"]
    entry = "hidden: xattr user.fuseoverlayfs.opaque (fuse-overlayfs's own metadata)"
    assert cell["status"] == "ok" and cell["skipped_at_import"] == {"count": 1, "entries": [entry]}
    assert f"skipped at import: opaque fuse-overlayfs on {cell['backing']}: 1 entry ({entry})" in r.stdout.splitlines()


@pytest.mark.parametrize(
    ("name", "mechanism"),
    [
        ("trusted.overlay.redirect", "overlayfs"),
        ("user.overlay.opaque", "overlayfs"),
        ("user.fuseoverlayfs.origin", "fuse-overlayfs"),
        ("security.fuseoverlayfs.override_stat", "fuse-overlayfs"),
        ("user.containers.override_stat", "fuse-overlayfs"),
        ("btrfs.compression", "btrfs"),
        ("user.mine", None),
        ("security.capability", None),
    ],
)
def test_one_home_names_the_mechanism_each_xattr_steers(name: str, mechanism: str | None) -> None:
    assert mechanism_xattr(name) == mechanism
