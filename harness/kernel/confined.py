"""File operations confined to one directory tree by the kernel: openat2(2) beneath a root fd.

A scenario's step works inside a container's root, and every path it names is
untrusted (docs/scenarios.md, confinement). The scenario check refuses `..`, absolute
paths and NUL bytes after parameters are substituted; this module makes a missed check
harmless anyway: every path is resolved by openat2(2) relative to an `O_PATH` fd of the
root with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, so the
kernel refuses a `..` above the root, an absolute path and any symlink on the way
(planted by an image or a step) before anything is touched. The last component is then
acted on through its parent's fd (`unlinkat`, `renameat`, `fchownat`, `fchmodat2` ...)
without following a symlink, so the op itself is one syscall on a single name.

`Parents` resolves a step's parent directories once, before the clock; the timed region
holds only the single-name op.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "Root",
    "Parents",
    "Escape",
    "openat2",
    "opendir",
    "path_error",
    "chmod",
    "RESOLVE_BENEATH",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_MAGICLINKS",
]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_SYS_OPENAT2 = 437  # x86_64 and the architectures of the unified table (arm64, riscv ...)
_SYS_FCHMODAT2 = 452  # Linux >= 6.6: fchmodat with AT_SYMLINK_NOFOLLOW
_AT_SYMLINK_NOFOLLOW = 0x100

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
#: what every confined lookup uses: stay below the root, follow no symlink of any kind
BENEATH = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class Escape(Exception):
    """A path a step was given points outside its container's root (or holds a NUL): nothing was touched.

    Not an OSError, so no `allow_errors` of a step turns it into an outcome.
    """


def path_error(path: str) -> str | None:
    """Why `path` cannot name something inside a container or image root, or None.

    The scenario check (harness/scenario.py) and `Root` (at run time) share this rule.
    """
    if "\0" in path:
        return "must not hold a NUL byte"
    if not path.strip("/"):
        return "must name a path below the container root"
    if path.startswith("/") or ".." in path.split("/"):
        return "must be relative to the container root, without '..'"
    return None


#: open_how structs by (flags, mode, resolve), made once: a layer's import opens a directory per entry
_HOWS: dict[tuple[int, int, int], Any] = {}
_HOW_SIZE = ctypes.sizeof(_OpenHow)


def _how(flags: int, mode: int, resolve: int) -> Any:
    key = (flags, mode, resolve)
    ref = _HOWS.get(key)
    if ref is None:
        if len(_HOWS) >= 64:
            _HOWS.clear()
        ref = _HOWS[key] = ctypes.byref(_OpenHow(flags, mode, resolve))
    return ref


_OPENDIR = _how(os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, BENEATH)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = BENEATH) -> int:
    """openat2(2): open `path` relative to `dirfd` under the `resolve` restrictions; returns the fd."""
    if "\0" in path:
        raise Escape(f"{path!r}: holds a NUL byte")
    creates = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE  # O_TMPFILE holds O_DIRECTORY's bit
    how = _how(flags | os.O_CLOEXEC, mode if creates else 0, resolve)
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), how, _HOW_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.EXDEV and resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
            raise Escape(f"{path!r}: resolves outside the root it must stay below")
        raise OSError(err, os.strerror(err), path)
    return fd


def opendir(dirfd: int, name: str) -> int:
    """A readable directory fd of `name` below `dirfd`: never above it, no symlink followed
    (a symlink: ELOOP, a non-directory: ENOTDIR, nothing there: FileNotFoundError).

    `openat2` without its generality: a layer's import opens a directory per entry."""
    if "\0" in name:
        raise Escape(f"{name!r}: holds a NUL byte")
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(name), _OPENDIR, _HOW_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.EXDEV:
            raise Escape(f"{name!r}: resolves outside the root it must stay below")
        raise OSError(err, os.strerror(err), name)
    return int(fd)


def chmod(dirfd: int, name: str, mode: int) -> None:
    """fchmodat2(2) of `name` in `dirfd` without following a symlink (a symlink: EOPNOTSUPP)."""
    ret = _libc.syscall(
        _SYS_FCHMODAT2, ctypes.c_int(dirfd), os.fsencode(name), ctypes.c_uint(mode), ctypes.c_uint(_AT_SYMLINK_NOFOLLOW)
    )
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


def _parts(rel: str) -> list[str]:
    """The components of a path below a root; `Escape` for one that is not."""
    if rel in ("", "."):
        return []
    why = path_error(rel)
    if why is not None:
        raise Escape(f"{rel!r} {why}")
    return [p for p in rel.split("/") if p not in ("", ".")]


class Root:
    """A container's (or layer's) root directory: every path below it is resolved by openat2 beneath its fd.

    The root itself is the harness's own (a driver's mount point), opened once by its
    path; nothing below it is ever reached by a path string.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, _DIR)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, rel: str, flags: int, mode: int = 0o644) -> int:
        """An fd of `rel` below the root (`O_CLOEXEC` added); "" or "." is the root itself."""
        return openat2(self.fd, "/".join(_parts(rel)) or ".", flags, mode)

    def dir(self, rel: str) -> int:
        """An `O_PATH` fd of the directory `rel` below the root."""
        return self.open(rel, _DIR)

    def makedirs(self, rel: str, mode: int = 0o777) -> None:
        """mkdir -p of `rel` below the root, one component at a time (no symlink followed)."""
        fd = os.dup(self.fd)
        try:
            for name in _parts(rel):
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = openat2(fd, name, _DIR)
                os.close(fd)
                fd = nfd
        finally:
            os.close(fd)

    def lstat(self, rel: str) -> os.stat_result:
        """lstat of `rel` below the root."""
        with Parents(self) as parents:
            pfd, name = parents.at(rel)
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)

    def mount_path(self, fd: int) -> str:
        """The path of an fd opened below the root, for a mount table entry (umount by path later)."""
        return os.readlink(f"/proc/self/fd/{fd}")


class Parents:
    """The parent directories of a step's paths, each opened once beneath a root (before the clock).

    `at(rel)` gives (parent fd, last name); the fds live until `close`, so each step
    opens its own and a rename or unlink by an earlier step is never hidden by a stale fd.
    """

    def __init__(self, root: Root) -> None:
        self.root = root
        self._fds: dict[str, int] = {}

    def __enter__(self) -> Parents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def dir(self, rel: str) -> int:
        """The `O_PATH` fd of directory `rel` below the root, opened once."""
        key = "/".join(_parts(rel))
        fd = self._fds.get(key)
        if fd is None:
            fd = self._fds[key] = self.root.dir(key)
        return fd

    def at(self, rel: str) -> tuple[int, str]:
        """(fd of the parent of `rel`, its last component): a single name, never `.` or `..`."""
        parts = _parts(rel)
        if not parts:
            raise Escape(f"{rel!r}: names the root itself, not a path below it")
        return self.dir("/".join(parts[:-1])), parts[-1]

    def prepare(self, rels: Iterable[str]) -> list[tuple[int, str]]:
        """`at` of each path, in order."""
        return [self.at(rel) for rel in rels]

    def kind(self, rel: str) -> tuple[bool, int] | None:
        """The first entry on the way to `rel` that is not a directory, or at `rel` not a regular
        file: (whether it is `rel` itself, its st_mode); None if there is none (or nothing there).
        Nothing is followed, and only directories are opened."""
        parts = _parts(rel)
        for i, name in enumerate(parts):
            pfd = self.dir("/".join(parts[:i]))
            try:
                mode = os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return None
            last = i == len(parts) - 1
            if (last and not stat.S_ISREG(mode)) or (not last and not stat.S_ISDIR(mode)):
                return last, mode
        return None
