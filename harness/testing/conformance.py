"""The driver conformance suite: ``pytest --pyargs layerbench.testing.conformance --layerbench-driver NAME``.

Cases follow moby's graphtest and containerd's snapshotter testsuite. Each builds
an image through the driver and, in step, in a plain directory, and checks that a
fresh container shows exactly the plain directory (see :mod:`layerbench.testing`).
A driver of style ``none`` (null) shares one directory by design and only runs the
cases that do not need layers to be apart.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from pathlib import Path

import pytest

from layerbench.driver import Driver, Style
from layerbench.testing import (
    T0,
    Append,
    Chmod,
    Chown,
    File,
    Link,
    Mkdir,
    Opaque,
    Remove,
    Rename,
    SetXattr,
    Stack,
    Symlink,
    mounts_below,
)

pytestmark = pytest.mark.conformance


def _layered(driver: Driver) -> None:
    if driver.style is Style.NONE:
        pytest.skip(f"{driver.name} is of style none: one shared directory, no layers to keep apart")


def test_empty_layer_root_is_0755_root(layerbench_stack: Stack) -> None:
    """graphtest CreateEmpty, containerd RootPermission: an empty layer's root is 0755 root:root
    (or the mode a driver declares it gives every root, `Driver.root_mode`: Podman's overlay, 0555)."""
    layerbench_stack.layer()
    tree = layerbench_stack.view()
    root = tree.entries["."]
    want = layerbench_stack.driver.root_mode or 0o755
    assert stat.S_ISDIR(root.mode) and stat.S_IMODE(root.mode) == want, stat.filemode(root.mode)
    assert (root.uid, root.gid) == (0, 0)
    assert list(tree.entries) == ["."], f"an empty layer shows {sorted(tree.entries)}"


def test_sticky_dir_and_setuid_file_survive_into_children(layerbench_stack: Stack) -> None:
    """graphtest CreateBase/verifyBase: a sticky 0705 dir owned 1:2 and a setuid 0222 file."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(Mkdir("a", 0o1705, 1, 2), File("a/file", b"base", 0o4222, 0, 0), File("toplevel", b"x" * 5000))
    s.layer(File("child-only", b"c"))
    s.commit(File("grandchild", b"g"))
    s.check_all()
    a = s.view().entries["a/file"]
    assert stat.S_IMODE(a.mode) == 0o4222 and s.view().entries["a"].mode & stat.S_ISVTX


def test_deep_read_through_128_layers(layerbench_stack: Stack) -> None:
    """graphtest DeepLayerRead, containerd 128LayersMount: every layer's file visible on top."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(File("bottom.txt", b"from the bottom layer"), Mkdir("d"))
    for i in range(1, 128):
        s.layer(File(f"d/f{i}", str(i).encode()))
    s.check()
    s.check("l64")


def test_whiteouts_and_opaque_dirs_stay_hidden_in_grandchildren(layerbench_stack: Stack) -> None:
    """containerd DeletedFilesInChildSnapshot: removals (layer whiteouts, unlinks in a container)
    and opaque directories hide lower entries in every layer above."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(
        Mkdir("a"),
        File("a/x", b"x"),
        File("a/y", b"y"),
        Mkdir("b"),
        File("b/p", b"p"),
        Mkdir("b/sub"),
        File("b/sub/q", b"q"),
        Mkdir("c"),
        File("c/z", b"z"),
        File("top", b"t"),
    )
    s.layer(Remove("a/x"), Opaque("b", 0o750), File("b/r", b"r"), Remove("top"))
    s.layer(File("unrelated", b"u"))
    s.commit(Remove("c/z"), Remove("a/y"))
    s.layer(File("a/new", b"n"))
    s.commit(File("b/s", b"s"))
    s.check_all()


def test_remove_lower_dir_and_recreate_it(layerbench_stack: Stack) -> None:
    """containerd RemoveDirectoryInLowerLayer: rm -rf a lower dir, make it again, new content."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(Mkdir("lib"), Mkdir("lib/modules"), File("lib/modules/m.ko", b"module"), File("lib/libc.so", b"c" * 9000))
    s.commit(Remove("lib"), Mkdir("lib", 0o700), File("lib/newfile", b"new"))
    s.layer(File("lib/other", b"o"))
    s.check_all()


def test_chown_of_lower_entries(layerbench_stack: Stack) -> None:
    """containerd Chown: chown a lower dir, file and symlink from a container; committed and kept."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(
        Mkdir("dir", 0o755),
        File("dir/file", b"data" * 1000),
        Symlink("dir/link", "file"),
        File("dir/exe", b"#!", 0o755),
    )
    s.commit(Chown("dir", 1, 1), Chown("dir/file", 2, 3), Chown("dir/link", 4, 5))
    s.commit(Chown("dir/exe", 6, 7), Chmod("dir/exe", 0o4755))
    s.check_all()


def test_directory_permissions_across_three_layers(layerbench_stack: Stack) -> None:
    """containerd DirectoryPermissionOnCommit: modes set in each of three layers hold above."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(Mkdir("dir1", 0o700), Mkdir("dir2", 0o750, 1, 1), Mkdir("dir3", 0o700), File("dir3/f", b"f"))
    s.commit(Chmod("dir1", 0o755), File("dir2/f", b"f"), Mkdir("dir4", 0o711))
    s.layer(Mkdir("dir3", 0o777, 2, 2), Mkdir("dir1/sub", 0o701))
    s.check_all()


def test_move_hardlinked_file_out_of_lower_dir(layerbench_stack: Stack) -> None:
    """containerd MoveFileFromLowerLayer: link a lower file elsewhere, remove its dir; hardlink
    groups made inside one layer stay groups above it."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(
        Mkdir("dir1", 0o700),
        File("dir1/f1", b"Hello"),
        Mkdir("dir2", 0o700),
        File("dir2/f2", b"..."),
        Mkdir("same"),
        File("same/a", b"shared"),
        Link("same/b", "same/a"),
    )
    s.commit(
        Mkdir("dir3", 0o700), File("dir3/f1", b"Hello"), Remove("dir1"), Link("dir3/f2", "dir2/f2"), Remove("dir2/f2")
    )
    s.layer(File("next", b"n"))
    s.check_all()
    assert frozenset({"same/a", "same/b"}) in s.view().links


def test_renames(layerbench_stack: Stack) -> None:
    """containerd Rename: files and directories renamed in a container. A driver that cannot rename
    a lower directory answers EXDEV (overlay without redirect_dir), and the suite then does what
    mv(1) does; the result must still match."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(Mkdir("d1"), File("d1/f", b"f"), Mkdir("d1/sub"), File("d1/sub/g", b"g"), File("file", b"x"), Mkdir("d2"))
    s.commit(Rename("file", "d2/file"), Rename("d1", "moved"), File("d2/new", b"n"), Rename("d2/new", "d2/renamed"))
    s.commit(Rename("d2", "d3"))
    s.check_all()
    for note in s.notes:
        print(note)


def test_file_updates_across_second_boundaries(layerbench_stack: Stack) -> None:
    """containerd LayerFileupdate: the same file rewritten in each layer with its own mtime."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(File("f", b"aaaa", mtime=T0), File("keep", b"k", mtime=T0 - 86400))
    s.layer(File("f", b"bbbb", mtime=T0 + 1))
    s.commit(Append("f", b"cc", mtime=T0 + 2))
    s.commit(File("f", b"dddd", 0o600, 3, 3, mtime=T0 + 3))
    s.check_all()


def test_symlinks_devices_and_xattrs(layerbench_stack: Stack) -> None:
    """Symlink targets (relative, absolute, dangling), a fifo, user xattrs set in a container."""
    s = layerbench_stack
    _layered(s.driver)
    s.layer(
        Mkdir("etc"),
        File("etc/conf", b"c"),
        Symlink("rel", "etc/conf"),
        Symlink("abs", "/etc/conf"),
        Symlink("dangling", "nowhere/at/all"),
    )
    try:
        top = s.commit(SetXattr("etc/conf", "user.layerbench", b"v1"), Symlink("rel", "abs"))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip(f"{s.driver.name}: user xattrs not supported in a container ({exc.strerror})")
        raise
    if (kept := s.driver.commit_xattrs) is not None and "user.layerbench" not in kept:
        # The engine's commit writes only these xattrs into the layer (containerd's differ:
        # security.capability): the container's user xattr is gone from the committed image.
        got = dict(s.view().entries["etc/conf"].xattrs)
        assert "user.layerbench" not in got, f"{s.driver.name}: commit kept user.layerbench; commit_xattrs is stale"
        entry = s.expected[top].entries["etc/conf"]
        s.expected[top].entries["etc/conf"] = dataclasses.replace(entry, xattrs=())
    s.check_all()


def test_committed_container_image_starts_again(layerbench_stack: Stack) -> None:
    """docker commit: the new image shows the container's changes, the old image does not."""
    s = layerbench_stack
    _layered(s.driver)
    base = s.layer(Mkdir("app"), File("app/bin", b"v1" * 4096, 0o755), File("app/conf", b"a=1"))
    s.commit(Append("app/conf", b"\nb=2"), File("app/log", b"started"), Remove("app/bin"))
    committed = s.top
    s.commit(File("app/log", b"second run"))
    s.check(base)
    s.check(committed)
    s.check()


def test_commit_of_a_mounted_container(layerbench_stack: Stack) -> None:
    """The runner's `commit` after a `start`: committed while mounted, the layer holds what was
    written before the call; the container stays mounted and takes more writes, which reach
    neither the layer nor the image (the rule in Driver.commit). The conformance suite's other
    commits unmount first: both ways are the contract."""
    s = layerbench_stack
    _layered(s.driver)
    base = s.layer(
        Mkdir("app"), File("app/conf", b"a=1"), File("app/bin", b"b" * 5000, 0o755), File("app/old", b"o" * 3000)
    )
    s.commit(
        Append("app/conf", b"\nb=2"),
        File("app/log", b"started"),
        Remove("app/old"),
        mounted=True,
        then=(Append("app/log", b"+after"), File("app/late", b"after the commit"), Remove("app/bin")),
    )
    s.check(base)
    s.check()


def test_container_writes_stay_in_the_container(layerbench_driver: Driver) -> None:
    """Two containers of one image: a write in one is seen neither by the other nor the image."""
    d = layerbench_driver
    _layered(d)
    path = d.create_layer("base", None)
    File("f", b"image").apply(path)  # a new file: the same in a DIFF and a FULL layer
    d.seal_layer("base")
    d.create_container("x", "base")
    d.create_container("y", "base")
    x, y = d.mount("x"), d.mount("y")
    try:
        Append("f", b"+x").apply(x)
        File("only-x", b"1").apply(x)
        got = (y / "f").read_bytes()
        assert got == b"image", f"container y reads f as {got!r}, not the image's b'image': x's append reached it"
        assert not (y / "only-x").exists(), "container y sees only-x, a file written in container x"
        got = (x / "f").read_bytes()
        assert got == b"image+x", f"container x reads f as {got!r} after appending b'+x' to b'image'"
    finally:
        d.unmount("x")
        d.unmount("y")
    d.create_container("z", "base")
    z = d.mount("z")
    try:
        got = (z / "f").read_bytes()
        assert got == b"image", f"a new container of the image reads f as {got!r}, not b'image': x's write reached it"
        names = sorted(os.listdir(z))
        assert names == ["f"], f"a new container of the image holds {names}, not ['f']: x's writes reached the image"
    finally:
        d.unmount("z")


def test_removing_a_layer_with_children_is_refused(layerbench_driver: Driver) -> None:
    """graphtest/containerd Remove: a layer with a child layer or a container cannot go (EBUSY);
    once its children are gone it can."""
    d = layerbench_driver
    _layered(d)
    File("f", b"base").apply(d.create_layer("base", None))
    d.seal_layer("base")
    d.create_layer("mid", "base")
    d.seal_layer("mid")
    d.create_container("c", "mid")
    for busy in ("base", "mid"):
        with pytest.raises(OSError) as info:
            d.remove(busy)
        assert info.value.errno == errno.EBUSY, f"remove({busy!r}) raised {info.value!r}, not EBUSY"
    root = d.mount("c")
    try:
        assert (root / "f").read_bytes() == b"base"  # the refused removal left the chain intact
    finally:
        d.unmount("c")
    d.remove("c")
    d.remove("mid")
    d.remove("base")
    d.create_layer("base", None)  # the id is free again
    d.seal_layer("base")


def test_an_id_that_exists_is_refused(layerbench_driver: Driver) -> None:
    """graphtest's duplicate Create: a layer, container or commit under an id that is a layer or a
    container already is refused with EEXIST, and the item under that id is left as it was."""
    d = layerbench_driver
    File("f", b"base").apply(d.create_layer("base", None))
    d.seal_layer("base")
    d.create_container("c", "base")
    made = {
        "a layer with a layer's id": lambda: d.create_layer("base", None),
        "a child layer with its parent's id": lambda: d.create_layer("base", "base"),
        "a layer with a container's id": lambda: d.create_layer("c", "base"),
        "a container with a container's id": lambda: d.create_container("c", "base"),
        "a container with a layer's id": lambda: d.create_container("base", "base"),
        "a commit under a layer's id": lambda: d.commit("c", "base"),
        "a commit under its container's id": lambda: d.commit("c", "c"),
    }
    for what, make in made.items():
        with pytest.raises(OSError) as info:
            make()
        assert info.value.errno == errno.EEXIST, f"{d.name}: {what} raised {info.value!r}, not EEXIST"
    root = d.mount("c")
    try:
        assert (root / "f").read_bytes() == b"base", f"{d.name}: a refused duplicate changed container c"
    finally:
        d.unmount("c")
    d.commit("c", "next")  # the ids still work: a new one is taken, and removal goes as usual
    d.remove("c")
    d.remove("next")
    d.remove("base")


def test_close_is_idempotent(layerbench_driver: Driver) -> None:
    """containerd CloseTwice: close, then close again."""
    d = layerbench_driver
    d.create_layer("img", None)
    d.seal_layer("img")
    d.create_container("c", "img")
    d.mount("c")
    d.close()
    d.close()
    _assert_clean(d)


def test_close_after_a_crash_half_way(layerbench_driver: Driver) -> None:
    """A run that died half-way (containers mounted, an operation failed): close releases all."""
    d = layerbench_driver
    File("f", b"x").apply(d.create_layer("img", None))
    d.seal_layer("img")
    for cid in ("c1", "c2"):
        d.create_container(cid, "img")
        Append("f", b"y").apply(d.mount(cid))
    try:  # an operation that fails half-way (most drivers raise here; null does not)
        d.create_container("bad", "no-such-layer")
    except Exception:  # noqa: BLE001  whatever it raises, close() must still release everything
        pass
    d.close()
    _assert_clean(d)
    d.close()
    _assert_clean(d)


def _assert_clean(d: Driver) -> None:
    left_mounts = mounts_below(d.home)
    assert not left_mounts, f"{d.name}: close() left mounts {left_mounts}"
    left = [str(Path(top, n).relative_to(d.home)) for top, dirs, files in os.walk(d.home) for n in files]
    assert not left, f"{d.name}: close() left files under its home: {left[:10]}"
