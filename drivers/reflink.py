"""reflink: snapshot-style at file granularity — every layer and container is a FICLONE copy.

Each layer and container is a directory `<home>/items/<id>` holding its whole tree,
made from its parent's tree by cloning every regular file with the FICLONE ioctl
(the new file shares the parent's extents until either is written, then only the
written blocks are copied) and recreating directories, symlinks and device nodes
with their mode, owner, times and xattrs; hardlinks within a tree are kept. It
sits on a loop-backed XFS made with ``mkfs.xfs -m reflink=1`` (or btrfs). A
container start costs one clone per file and one mkdir per directory, no data;
the first write to a big image file copies only the blocks written.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path

from layerbench.harness.driver import Driver, LayerFormat, Style
from layerbench.harness.treecopy import copy_xattrs

from ._common import Lineage, fs_in_kernel, needs_root, remove_tree

__all__ = ["ReflinkDriver", "clone_tree", "FICLONE"]

FICLONE = 0x40049409  # _IOW(0x94, 9, int): on the destination fd, the argument is the source fd


def _clone_file(src: str, dst: str, mode: int) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
        try:
            fcntl.ioctl(fout, FICLONE, fin)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _finish(path: str, st: os.stat_result) -> None:
    os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def clone_tree(src: str, dst: str) -> None:
    """Copy the tree at `src` to `dst` (which must not exist), regular files by FICLONE."""
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = [(dst, os.lstat(src))]
    os.mkdir(dst, 0o700)
    copy_xattrs(src, dst)
    stack = [(src, dst)]
    while stack:
        sdir, ddir = stack.pop()
        with os.scandir(sdir) as it:
            entries = list(it)
        for entry in entries:
            s, d = entry.path, os.path.join(ddir, entry.name)
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, 0o700)
                copy_xattrs(s, d)
                dirs.append((d, st))
                stack.append((s, d))
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in links:
                    os.link(links[key], d)
                    continue
                links[key] = d
            if stat.S_ISREG(mode):
                _clone_file(s, d, mode)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                os.mknod(d, mode, st.st_rdev)
            else:  # sockets are not image content
                continue
            copy_xattrs(s, d)
            _finish(d, st)
    for path, st in reversed(dirs):  # directory times last, deepest first
        _finish(path, st)


class ReflinkDriver(Driver):
    """Every layer and container a FICLONE copy of its parent, on reflink-capable XFS."""

    name = "reflink"
    style = Style.SNAPSHOT
    layer_format = LayerFormat.FULL
    backings = ("xfs", "btrfs")

    @classmethod
    def probe(cls) -> str | None:
        if reason := needs_root():
            return reason
        if not fs_in_kernel("xfs") and not fs_in_kernel("btrfs"):
            return "the kernel has neither xfs nor btrfs, so no reflink-capable backing filesystem"
        if shutil.which("mkfs.xfs") is None and shutil.which("mkfs.btrfs") is None:
            return "neither xfsprogs nor btrfs-progs is installed (apt-get install xfsprogs)"
        return None

    def _dir(self, item_id: str) -> Path:
        return self.home / "items" / item_id

    def setup(self) -> None:
        (self.home / "items").mkdir(exist_ok=True)
        self.lineage = Lineage()
        probe_src, probe_dst = self.home / ".probe-src", self.home / ".probe-dst"
        try:
            probe_src.write_bytes(b"x")
            _clone_file(str(probe_src), str(probe_dst), 0o600)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV):
                raise OSError(exc.errno, f"reflink: {self.home} is on a filesystem without FICLONE") from exc
            raise
        finally:
            probe_src.unlink(missing_ok=True)
            probe_dst.unlink(missing_ok=True)

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        path = self._dir(layer_id)
        if parent is None:
            path.mkdir(mode=0o755)
        else:
            clone_tree(str(self._dir(parent)), str(path))
        self.lineage.add(layer_id, parent)
        return path

    def create_container(self, container_id: str, image: str) -> None:
        clone_tree(str(self._dir(image)), str(self._dir(container_id)))
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        return self._dir(container_id)  # the clone is already a real tree

    def unmount(self, container_id: str) -> None:
        pass

    def commit(self, container_id: str, layer_id: str) -> None:
        clone_tree(str(self._dir(container_id)), str(self._dir(layer_id)))
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        remove_tree(self._dir(item_id))
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        return {"Dir": str(self._dir(item_id)), "Clone": "FICLONE per regular file"}

    def close(self) -> None:
        remove_tree(self.home / "items")
        for leftover in (".probe-src", ".probe-dst"):
            (self.home / leftover).unlink(missing_ok=True)
