"""Page cache held by a backing store's files, counted exactly with cachestat(2).

`page_cache_bytes(root)` opens every regular file under `root` (each inode once) and
asks the kernel how many of its pages are in the page cache. It walks the store's
own filesystem and the mounts below it that cache pages of their own (FUSE mounts:
fuse-overlayfs, zfs-fuse datasets); it does not enter overlay mounts, whose files
have no pages of their own (a read through overlayfs caches the layer's file, so a
page shared by N containers counts once). Other processes' files are not in it, so
the figure does not move with the rest of the machine. docs/memory.md says what it
cannot see.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from layerbench.kernel import mountinfo

__all__ = [
    "page_cache_bytes",
    "regular_files",
    "cached_bytes",
    "CacheState",
    "cache_state",
    "lost_pages",
    "drops",
    "drop_pages",
    "evict",
    "evict_files",
    "unavailable",
]

#: cachestat(2), Linux 6.5; new syscalls have one number on every architecture but alpha
_SYS_CACHESTAT = 451
#: mounts whose files keep no page cache of their own: the pages are the underlying files'
_PASS_THROUGH = {"overlay"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _cachestat(fd: int) -> _Stat:
    """cachestat(2) of the open file over its whole length."""
    whole, out = _Range(0, 0), _Stat()  # len 0: to the end of the file
    if _libc.syscall(_SYS_CACHESTAT, ctypes.c_uint(fd), ctypes.byref(whole), ctypes.byref(out), ctypes.c_uint(0)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cachestat: {os.strerror(err)}")
    return out


def _cached_pages(fd: int) -> int:
    """Pages of the open file in the page cache, over its whole length."""
    return int(_cachestat(fd).nr_cache)


def unavailable() -> str | None:
    """None when cachestat(2) works here, else why not."""
    fd = os.open("/proc/self/exe", os.O_RDONLY)
    try:
        _cached_pages(fd)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return f"cachestat(2) needs Linux 6.5 or later (this kernel: {os.uname().release})"
        return str(exc)
    finally:
        os.close(fd)
    return None


def _mounts_below(root: str) -> dict[str, str]:
    """Mount points strictly below `root`, with their filesystem type."""
    below = set(mountinfo.points_below(root, include_root=False))
    return {m.point: m.fstype for m in mountinfo.mounts() if m.point in below}


def regular_files(root: Path) -> list[str]:
    """Every regular file under `root`, each inode once, not entering pass-through (overlay) mounts."""
    mounts = _mounts_below(str(root))
    skip = {p for p, fstype in mounts.items() if fstype in _PASS_THROUGH}
    seen: set[tuple[int, int]] = set()
    out: list[str] = []
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    if entry.path not in skip:
                        stack.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    out.append(entry.path)
    return out


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOATIME)
    except PermissionError:  # O_NOATIME needs the file's owner
        pass
    except FileNotFoundError:  # removed while walking
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, PermissionError):
        return None


def cached_bytes(paths: list[str]) -> int:
    """Bytes of page cache held by these files (`regular_files`: walk once, count as often as needed)."""
    pages = 0
    for path in paths:
        fd = _open(path)
        if fd is None:
            continue
        try:
            pages += _cached_pages(fd)
        finally:
            os.close(fd)
    return pages * _PAGE


@dataclass(frozen=True)
class CacheState:
    """The page cache of a list of files at one moment: each file's cached pages (in the order given) and
    the pages the kernel evicted from them by reclaim (cachestat's nr_evicted, summed)."""

    pages: tuple[int, ...]
    evicted: int

    @property
    def bytes(self) -> int:
        return sum(self.pages) * _PAGE


def cache_state(paths: list[str]) -> CacheState:
    """Each file's cached pages and the evicted ones now (a file gone meanwhile counts 0)."""
    pages, evicted = [], 0
    for path in paths:
        fd = _open(path)
        if fd is None:
            pages.append(0)
            continue
        try:
            st = _cachestat(fd)
        finally:
            os.close(fd)
        pages.append(int(st.nr_cache))
        evicted += int(st.nr_evicted)
    return CacheState(tuple(pages), evicted)


def drops() -> int | None:
    """How many times anyone dropped the page cache since boot (/proc/vmstat `drop_pagecache`; None where
    the kernel does not count it or /proc is not readable). A drop leaves no trace in cachestat."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == "drop_pagecache":
                    return int(value)
    except OSError:
        return None
    return None


def lost_pages(before: CacheState, after: CacheState) -> int:
    """Pages that left the cache between the two states of the same files, while nothing should have: a file
    with fewer cached pages than before (dropped caches, fadvise, truncation leave no trace), or more pages
    evicted by reclaim (cachestat's nr_evicted). 0 when the cache only grew."""
    fewer = sum(max(b - a, 0) for b, a in zip(before.pages, after.pages, strict=True))
    return fewer + max(after.evicted - before.evicted, 0)


def page_cache_bytes(root: Path) -> int:
    """Bytes of page cache held by the regular files under `root` (each inode once)."""
    return cached_bytes(regular_files(root))


def drop_pages(fd: int) -> None:
    """Write the open file's dirty pages back, then drop all its pages from the page cache."""
    try:
        os.fdatasync(fd)
    except OSError as exc:  # a read-only filesystem without fsync (squashfs: EINVAL) has no dirty page
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def evict(root: Path) -> None:
    """Drop the pages of the files under `root` (POSIX_FADV_DONTNEED), where drop_caches is not allowed."""
    evict_files(regular_files(root))


def evict_files(paths: list[str]) -> None:
    """Drop these files' pages from the page cache (POSIX_FADV_DONTNEED), and no other file's."""
    for path in paths:
        fd = _open(path)
        if fd is None:
            continue
        try:
            drop_pages(fd)
        finally:
            os.close(fd)
