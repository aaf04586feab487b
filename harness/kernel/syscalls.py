"""Thin ctypes wrappers over the mount syscalls, so timed regions spawn no process.

Every mount made here is `nodev,nosuid` (docs/images.md, threat model): an image's
device nodes cannot be opened through it and its setuid files give no privilege.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

from layerbench.kernel import mountinfo

__all__ = [
    "unmount_below",
    "drop_caches",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOSUID",
    "harden",
    "mount",
    "umount",
    "overlay_mount",
    "has_new_mount_api",
    "syncfs",
    "MNT_DETACH",
    "UMOUNT_NOFOLLOW",
    "bind_mount_at",
    "tmpfs_mount_at",
]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
#: forced on every mount: device nodes inert, setuid and file capabilities ignored
_SAFE_FLAGS = MS_NODEV | MS_NOSUID
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x2, 0x4

# The new mount API: the same numbers on every architecture (added after 4.20's unification).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 428, 429, 430, 431, 432
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100


def _check(ret: int, what: str, path: str | bytes = "") -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", os.fsdecode(path) if path else None)
    return ret


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None),
        "mount",
        target,
    )


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2), always with MS_NODEV | MS_NOSUID.

    A bind mount ignores those flags (it copies its source's), so it is hardened right after.
    """
    _mount(source, target, fstype, flags | _SAFE_FLAGS, data)
    if flags & MS_BIND and not flags & MS_REMOUNT:
        harden(target, readonly=bool(flags & MS_RDONLY))


def harden(target: str, readonly: bool = False) -> None:
    """Make the mount on `target` nodev,nosuid (and read-only if asked), keeping its read-only and noexec.

    For mounts whose flags layerbench does not choose: a bind mount's, or a mount a
    helper made (zfs-fuse's datasets).
    """
    kept = os.statvfs(target).f_flag & (MS_RDONLY | MS_NOEXEC)  # ST_* bits equal MS_* bits
    _mount("", target, "", MS_REMOUNT | MS_BIND | _SAFE_FLAGS | kept | (MS_RDONLY if readonly else 0), "")


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), flags), "umount", target)


def _fsconfig(fd: int, key: bytes | None, value: bytes | None, cmd: int = _FSCONFIG_SET_STRING) -> None:
    ret = _libc.syscall(_SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(cmd), key, value, ctypes.c_int(0))
    _check(ret, f"fsconfig {key.decode() if key else 'create'}")


def has_new_mount_api() -> bool:
    """True when fsopen(2) exists and overlay takes `lowerdir+` (Linux >= 6.8)."""
    fd = _libc.syscall(_SYS_FSOPEN, b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC))
    if fd < 0:
        return False
    try:
        _fsconfig(fd, b"lowerdir+", b"/")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def overlay_mount(
    target: str,
    lowers: Sequence[str],
    upper: str | None,
    work: str | None,
    options: Sequence[tuple[str, str | None]] = (),
    data_lowers: Sequence[str] = (),
) -> None:
    """Mount overlayfs on `target` (nodev, nosuid) through the new mount API: `lowers` uppermost first,
    each added by `fsconfig(lowerdir+)`, which has no page limit (up to the kernel's 500 layers);
    `data_lowers` (data-only) below them by `datadir+`; an option whose value is None is a flag.

    The kernel side only: drivers mount overlay through `layerbench.drivers._overlay.mount_overlay`,
    which picks between this and one mount(2) and writes every overlay mount's options.
    """
    fd = _check(_libc.syscall(_SYS_FSOPEN, b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC)), "fsopen")
    try:
        for lower in lowers:
            _fsconfig(fd, b"lowerdir+", lower.encode())
        for data in data_lowers:
            _fsconfig(fd, b"datadir+", data.encode())
        if upper is not None and work is not None:
            _fsconfig(fd, b"upperdir", upper.encode())
            _fsconfig(fd, b"workdir", work.encode())
        for key, value in options:
            if value is None:
                _fsconfig(fd, key.encode(), None, _FSCONFIG_SET_FLAG)
            else:
                _fsconfig(fd, key.encode(), value.encode())
        _fsconfig(fd, None, None, _FSCONFIG_CMD_CREATE)
        mfd = _check(
            _libc.syscall(
                _SYS_FSMOUNT,
                ctypes.c_int(fd),
                ctypes.c_uint(_FSMOUNT_CLOEXEC),
                ctypes.c_uint(_MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOSUID),
            ),
            "fsmount",
            target,
        )
        try:
            _check(
                _libc.syscall(
                    _SYS_MOVE_MOUNT,
                    ctypes.c_int(mfd),
                    b"",
                    ctypes.c_int(_AT_FDCWD),
                    target.encode(),
                    ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
                ),
                "move_mount",
                target,
            )
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _move_onto(mfd: int, target_fd: int, what: str) -> None:
    """move_mount(2) of the detached mount `mfd` onto the directory fd `target_fd` (no path looked up)."""
    _check(
        _libc.syscall(
            _SYS_MOVE_MOUNT,
            ctypes.c_int(mfd),
            b"",
            ctypes.c_int(target_fd),
            b"",
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH),
        ),
        f"move_mount ({what})",
    )


def tmpfs_mount_at(target_fd: int, options: str = "") -> None:
    """Mount a new tmpfs (nodev, nosuid) on the directory open as `target_fd` (an `O_PATH` fd
    resolved beneath a container's root: the mount lands exactly there, whatever its path)."""
    fd = _check(_libc.syscall(_SYS_FSOPEN, b"tmpfs", ctypes.c_uint(_FSOPEN_CLOEXEC)), "fsopen tmpfs")
    try:
        for item in filter(None, options.split(",")):
            key, _, value = item.partition("=")
            _fsconfig(fd, key.encode(), value.encode())
        _fsconfig(fd, None, None, _FSCONFIG_CMD_CREATE)
        mfd = _check(
            _libc.syscall(
                _SYS_FSMOUNT,
                ctypes.c_int(fd),
                ctypes.c_uint(_FSMOUNT_CLOEXEC),
                ctypes.c_uint(_MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOSUID),
            ),
            "fsmount tmpfs",
        )
        try:
            _move_onto(mfd, target_fd, "tmpfs")
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def bind_mount_at(source: str, target_fd: int) -> None:
    """Bind-mount the directory `source` (nodev, nosuid) on the directory open as `target_fd`:
    open_tree(OPEN_TREE_CLONE), mount_setattr, move_mount onto the fd."""
    mfd = _check(
        _libc.syscall(
            _SYS_OPEN_TREE,
            ctypes.c_int(_AT_FDCWD),
            source.encode(),
            ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC),
        ),
        "open_tree",
        source,
    )
    try:
        attr = _MountAttr(_MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOSUID, 0, 0, 0)
        _check(
            _libc.syscall(
                _SYS_MOUNT_SETATTR,
                ctypes.c_int(mfd),
                b"",
                ctypes.c_uint(_AT_EMPTY_PATH),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            "mount_setattr",
            source,
        )
        _move_onto(mfd, target_fd, "bind")
    finally:
        os.close(mfd)


_libc.syncfs.argtypes = [ctypes.c_int]


def syncfs(path: str) -> None:
    """syncfs(2) on the filesystem holding `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _check(_libc.syncfs(fd), "syncfs", path)
    finally:
        os.close(fd)


def unmount_below(root: str, include_root: bool = False) -> list[str]:
    """Unmount every mount below `root` (and `root` itself if asked), deepest first.

    A busy mount is detached lazily as the last resort. Returns what was unmounted.
    """
    points = mountinfo.points_below(root, include_root)
    done = []
    for point in sorted(set(points), key=len, reverse=True):
        try:
            umount(point)
        except OSError:
            umount(point, MNT_DETACH)
        done.append(point)
    return done


def drop_caches() -> None:
    """Write dirty data back and drop the page cache, dentries and inodes (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")
