"""Apply a directory on the host onto a driver's layer directory as one layer (images/layer_apply.py).

Copy semantics as in `kernel/treecopy` (every byte copied, modes, owners, times, xattrs,
symlinks, devices, hardlinks inside the tree; sockets skipped); `.wh.` names are plain
files here. The same safety rules (and size limits) as for tar layers hold.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images.layer_apply import Applier, Entry, LayerStats, SymlinkPolicy
from layerbench.images.layer_stream import SizeLimit

__all__ = ["apply_host_dir"]


def _host_entry(name: str, st: os.stat_result, kind: str, xattrs: dict[str, bytes], linkname: str = "") -> Entry:
    return Entry(
        name=name,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        linkname=linkname,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        size=st.st_size,
        xattrs=xattrs,
    )


def _host_xattrs(path: str) -> dict[str, bytes]:
    try:
        return {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)}
    except OSError:
        return {}


def apply_host_dir(
    root: Path,
    src: Path,
    layer_format: LayerFormat,
    *,
    symlinks: SymlinkPolicy = "refuse",
    limit: SizeLimit | None = None,
) -> LayerStats:
    """Apply the tree at host directory `src` onto `root` as one layer.

    Copy semantics as in `treecopy` (every byte copied, modes, owners, times, xattrs,
    symlinks, devices, hardlinks inside the tree; sockets skipped); `.wh.` names are
    plain files here. The same safety rules (and size limits) as for tar layers hold.
    """
    if not src.is_dir():
        raise UserError(f"{src}: not a directory")
    applier = Applier(root, layer_format, str(src), symlinks, limit=limit)
    links: dict[tuple[int, int], str] = {}
    try:
        st = os.stat(src)
        applier.apply(_host_entry(".", st, "dir", _host_xattrs(str(src))), whiteouts=False)
        for dirpath, dirnames, filenames, dfd in os.fwalk(src, follow_symlinks=False):
            rel = os.path.relpath(dirpath, src)
            for name in sorted(dirnames) + sorted(filenames):
                path = name if rel == "." else f"{rel}/{name}"
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                full = os.path.join(dirpath, name)
                mode = st.st_mode
                if not stat.S_ISDIR(mode) and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in links:
                        applier.apply(_host_entry(path, st, "hardlink", {}, links[key]), whiteouts=False)
                        continue
                    links[key] = path
                xattrs = _host_xattrs(full)
                data = None
                if stat.S_ISDIR(mode):
                    kind = "dir"
                elif stat.S_ISREG(mode):
                    kind, data = "file", _sender(name, dfd, st.st_size)
                elif stat.S_ISLNK(mode):
                    kind = "symlink"
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    kind = "char" if stat.S_ISCHR(mode) else "block" if stat.S_ISBLK(mode) else "fifo"
                else:
                    applier.stats.skip(f"{path}: sockets are not image content")
                    continue
                linkname = os.readlink(name, dir_fd=dfd) if kind == "symlink" else ""
                applier.apply(_host_entry(path, st, kind, xattrs, linkname), data, whiteouts=False)
        applier.finish()
        return applier.stats
    finally:
        applier.close()


def _sender(name: str, dfd: int, size: int) -> Callable[[int], int]:
    def write(fd: int) -> int:
        fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            offset = 0
            while offset < size:  # sendfile: a real copy, never a reflink
                sent = os.sendfile(fd, fin, offset, min(1 << 30, size - offset))
                if sent == 0:
                    break
                offset += sent
            return offset
        finally:
            os.close(fin)

    return write
