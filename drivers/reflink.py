"""reflink: snapshot-style at file granularity — every layer and container is a FICLONE copy.

Each layer and container is a directory `<home>/dir/<id>` holding its whole tree (vfs's layout),
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
from typing import ClassVar

from layerbench.driver import Style
from layerbench.kernel.treecopy import FileCopier

from ._common import fs_in_kernel, needs_root
from .vfs import VfsDriver

__all__ = ["ReflinkDriver", "clone_file", "FICLONE"]

FICLONE = 0x40049409  # _IOW(0x94, 9, int): on the destination fd, the argument is the source fd


def clone_file(src: str, dst: str, mode: int, size: int) -> None:
    """Make `dst` a FICLONE of `src`: it shares every extent until one of them is written."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
        try:
            fcntl.ioctl(fout, FICLONE, fin)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


class ReflinkDriver(VfsDriver):
    """vfs's layout, every regular file a FICLONE of its parent's, on reflink-capable XFS."""

    name = "reflink"
    style = Style.SNAPSHOT
    backings = ("xfs", "btrfs")
    in_default_run = False
    adopts_store = False  # vfs's layout would allow it; shared extents on a copied store are not tested
    copy_file: ClassVar[FileCopier] = staticmethod(clone_file)

    @classmethod
    def probe(cls) -> str | None:
        if reason := needs_root():
            return reason
        if not fs_in_kernel("xfs") and not fs_in_kernel("btrfs"):
            return "the kernel has neither xfs nor btrfs, so no reflink-capable backing filesystem"
        if shutil.which("mkfs.xfs") is None and shutil.which("mkfs.btrfs") is None:
            return "neither xfsprogs nor btrfs-progs is installed (apt-get install xfsprogs)"
        return None

    def setup(self) -> None:
        super().setup()
        probe_src, probe_dst = self.home / ".probe-src", self.home / ".probe-dst"
        try:
            probe_src.write_bytes(b"x")
            clone_file(str(probe_src), str(probe_dst), 0o600, 1)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV):
                raise OSError(exc.errno, f"reflink: {self.home} is on a filesystem without FICLONE") from exc
            raise
        finally:
            probe_src.unlink(missing_ok=True)
            probe_dst.unlink(missing_ok=True)

    def inspect(self, item_id: str) -> dict[str, str]:
        return {**super().inspect(item_id), "Clone": "FICLONE per regular file"}
