"""A full deep copy of a directory tree: every byte copied, never a reflink.

This is the vfs driver's mechanism (Docker's vfs on ext4). Mode, owner, times,
symlinks, device nodes (overlay whiteouts), xattrs and hardlinks inside the tree
are kept; nothing is shared with the source.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

__all__ = ["copy_tree", "copy_xattrs", "copy_data", "FileCopier"]

#: copies one regular file: (source, destination, mode, size)
FileCopier = Callable[[str, str, int, int], None]

_CHUNK = 1 << 30


def copy_xattrs(src: str, dst: str) -> None:
    """Copy every extended attribute the destination filesystem accepts."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return
        raise
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise


def copy_data(src: str, dst: str, mode: int, size: int) -> None:
    """Copy a regular file's bytes with sendfile: in the kernel, sharing no extents
    (copy_file_range may reflink)."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
        try:
            offset = 0
            while offset < size:
                sent = os.sendfile(fout, fin, offset, min(_CHUNK, size - offset))
                if sent == 0:
                    break
                offset += sent
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _finish(path: str, st: os.stat_result, xattrs_from: str | None = None) -> None:
    """Owner, mode, then xattrs (a chown drops `security.capability`: it must come after), then times."""
    os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if xattrs_from is not None:
        copy_xattrs(xattrs_from, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: str, dst: str, into: bool = False, copy_file: FileCopier = copy_data) -> None:
    """Copy the tree at `src` to `dst`, which must not exist unless `into` (copy the children).

    `copy_file` copies each regular file's data: a full copy by default, a clone
    for the reflink driver; everything else is recreated the same way.
    """
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []
    st = os.lstat(src)
    if not into:
        os.mkdir(dst, 0o700)
    copy_xattrs(src, dst)
    dirs.append((dst, st))
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
            if st.st_nlink > 1 and not stat.S_ISDIR(mode):
                key = (st.st_dev, st.st_ino)
                if key in links:
                    os.link(links[key], d)
                    continue
                links[key] = d
            if stat.S_ISREG(mode):
                copy_file(s, d, mode, st.st_size)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                os.mknod(d, mode, st.st_rdev)
            else:  # sockets are not image content
                continue
            _finish(d, st, xattrs_from=s)
    # Directory times last, deepest first, after their contents stopped changing.
    for path, st in reversed(dirs):
        _finish(path, st)
