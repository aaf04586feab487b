"""containerd-testsuite style: layers applied to a plain directory and through a driver agree.

Each layer of an OCI layout built here is applied (FULL) to a plain directory and,
through the driver, to the layer directory it hands out (DIFF on overlay2: kernel
whiteouts and opaque dirs, merged by a real overlay mount). After every layer a
container's root must equal the plain tree: type, mode, owner, size, content,
symlink target and mtime of every entry.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from layerbench.driver import LayerFormat
from layerbench.images.oci import apply_blob, read_image

from ..conftest import driver_on_store
from ..image_files import (
    DEV,
    WH,
    D,
    F,
    H,
    Layout,
    S,
    tar_bytes,
)

pytestmark = pytest.mark.mounts
MiB = 1 << 20


def sequence() -> list[bytes]:
    """Four layers: updates, chown of lower entries, dir modes across layers, whiteouts in
    grandchildren, opaque dirs, a lower dir removed and recreated."""
    import tarfile

    return [
        tar_bytes(
            D("etc/"),
            F("etc/hosts", b"127.0.0.1", mtime=1000),
            F("etc/conf", b"c"),
            D("d/", 0o1705, uid=1, gid=2),
            F("d/a", b"setuid", 0o4755),
            D("d/sub/"),
            F("d/sub/b", b"b"),
            D("lowerdir/", 0o750),
            F("lowerdir/x", b"x"),
            D("deep/"),
            D("deep/a/"),
            D("deep/a/b/"),
            F("deep/a/b/file", b"deep"),
            S("link", "etc/hosts"),
            H("hard", "etc/hosts"),
            DEV("fifo", tarfile.FIFOTYPE),
        ),
        tar_bytes(
            D("etc/"),
            WH("etc/.wh.conf"),
            F("etc/hosts", b"::1 localhost", mtime=1001),
            D("d/", 0o755, uid=1, gid=2),
            F("d/a", b"setuid", 0o4755, uid=5, gid=6),
            D("deep/"),
            D("deep/a/"),
            WH("deep/a/.wh.b"),
            WH(".wh.lowerdir"),
            D("lowerdir/", 0o700),
            F("lowerdir/y", b"y"),
        ),
        tar_bytes(
            D("etc/"),
            F("etc/other", b"o"),
            D("deep/"),
            F("deep/sibling", b"s"),
            D("d/", 0o711, uid=3, gid=3),
            WH("d/.wh..wh..opq"),
            F("d/fresh", b"f"),
            S("newlink", "d/fresh"),
        ),
        tar_bytes(
            D("lowerdir/", 0o700),
            F("lowerdir/z", b"z"),
            WH(".wh.link"),
            D("d/", 0o700, uid=3, gid=3),
            D("d/sub/"),
            F("d/sub/again", b"a"),
        ),
    ]


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below `root` (not `root` itself): what a container sees of it."""
    out: dict[str, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            item: tuple[object, ...] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    item += (st.st_size, hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns)
            elif stat.S_ISLNK(st.st_mode):
                item += (os.readlink(path), st.st_mtime_ns)
            elif not stat.S_ISDIR(st.st_mode):
                item += (st.st_rdev, st.st_mtime_ns)
            out[os.path.relpath(path, root)] = item
    return out


@pytest.mark.parametrize("name", ["overlay2", "vfs", "btrfs"])
def test_image_layers_through_the_driver_equal_a_plain_directory(name: str, work: Path) -> None:
    lay = Layout()
    lay.index([lay.manifest(sequence())])
    blobs = read_image(lay.write_dir(work / "image"))
    plain = work / "plain"
    plain.mkdir()
    with driver_on_store(name, work / "store") as (driver, _):
        parent = None
        for i, blob in enumerate(blobs):
            apply_blob(plain, blob, LayerFormat.FULL)
            apply_blob(driver.create_layer(f"l{i}", parent), blob, driver.layer_format)
            driver.seal_layer(f"l{i}")
            parent = f"l{i}"
            driver.create_container(f"c{i}", parent)
            try:
                seen, want = snapshot(driver.mount(f"c{i}")), snapshot(plain)
                diff = {k: (seen.get(k), want.get(k)) for k in seen.keys() | want.keys() if seen.get(k) != want.get(k)}
                assert not diff, f"{name}, after layer {i}: container vs plain dir {diff}"
            finally:
                driver.unmount(f"c{i}")
                driver.remove(f"c{i}")
    final = snapshot(plain)
    assert "etc/conf" not in final and "deep/a/b" not in final and "link" not in final
    assert sorted(k for k in final if k.startswith("d/")) == ["d/fresh", "d/sub", "d/sub/again"]
    assert sorted(k for k in final if k.startswith("lowerdir/")) == ["lowerdir/y", "lowerdir/z"]
    assert final["d/sub"][1:4] == (0o755, 0, 0)  # recreated under an opaque parent, not the lower one
