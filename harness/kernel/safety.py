"""Guards for a tool that runs as root: where it may work and how it removes things."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from layerbench.errors import UserError
from layerbench.kernel import mountinfo

__all__ = [
    "prepare_work_root",
    "check_work_root",
    "ancestors_error",
    "not_ours",
    "open_dir",
    "make_dir",
    "open_beneath",
    "remove_tree",
    "check_output_file",
    "check_output_dir",
    "MARKER",
    "DEFAULT_WORK_ROOT",
]

MARKER = ".layerbench-work-root"
DEFAULT_WORK_ROOT = Path("/var/tmp/layerbench")
#: refused as work roots themselves
_SYSTEM = {"/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var", "/var/tmp"}
#: refused as work roots and anywhere below them (and /lib, /lib32, /lib64, /libx32 ...)
_SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/proc", "/run", "/sbin", "/sys", "/usr", "/var/lib")


def _system_tree(path: str) -> str | None:
    """The system directory `path` is or lies under, if any."""
    top = "/" + path.split("/")[1]
    if re.fullmatch(r"/lib(32|64|x32)?", top):
        return top
    return next((t for t in _SYSTEM_TREES if path == t or path.startswith(t + "/")), None)


def _who(uid: int) -> str:
    return "root" if uid == 0 else f"uid {uid}"


def not_ours(st: os.stat_result) -> str | None:
    """Why an inode with this (l)stat is not the running user's alone, or None: owned by
    another user, or (not a symlink) writable by group or others."""
    euid = os.geteuid()
    if st.st_uid != euid:
        return f"owned by {_who(st.st_uid)}, not {_who(euid)}"
    if st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _ancestors_error(path: str) -> str | None:
    """Why a directory above `path` would let another user swap it, or None: each existing one
    must be root's (or ours) and, if others may write in it, sticky (as /tmp and /var/tmp are)."""
    for parent in reversed(Path(path).parents):
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            return None  # made below here by us, 0700
        if st.st_uid not in (0, os.geteuid()):
            return f"{parent} is owned by {_who(st.st_uid)}"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (
                f"{parent} is writable by group or others without the sticky bit (mode {stat.S_IMODE(st.st_mode):04o})"
            )
    return None


def ancestors_error(path: str) -> str | None:
    """Why a directory above `path` would let another user swap what is there, or None (each one root's or
    ours, sticky where others may write)."""
    return _ancestors_error(path)


_SWAP = "another user could swap it; use a work root under directories only root can write"
#: how deep `check_work_root` looks: the work root's own entries (run-*, oci-cache, dask) and theirs
#: (a run's cell and template directories, the cached layouts); deeper is a store's own tree
_CHECK_DEPTH = 2


def check_work_root(resolved: str, shown: str) -> None:
    """Refuse a work root (an existing directory, symlinks resolved) another user could have planted
    anything in: it, every directory above it, and the directories layerbench keeps in it (two
    levels; mount points, a store's tree, not entered) must be the running user's alone: owned by
    it and not writable by group or others. Raises a one-line `UserError` naming the path."""
    fix = "a work root and what it holds must be root's alone; remove it (after checking what it holds) or use another"
    if (why := _ancestors_error(resolved)) is not None:
        raise UserError(
            f"{shown}: {why}: another user could swap it; use a work root under directories only root can write"
        )
    mounted = set(mountinfo.mount_points())
    stack = [(resolved, 0)]
    while stack:
        path, depth = stack.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # gone while looking (a run that just ended)
        if (why := not_ours(st)) is not None:
            raise UserError(f"{shown}: {path} is {why}: {fix}")
        if not stat.S_ISDIR(st.st_mode) or depth >= _CHECK_DEPTH or (depth and path in mounted):
            continue
        try:
            with os.scandir(path) as it:
                stack += [(e.path, depth + 1) for e in it]
        except FileNotFoundError:
            continue


def prepare_work_root(path: Path) -> Path:
    """Check and make the work root: 0700, marked as ours; refuse a system or foreign directory,
    and one another user owns or may write in (`check_work_root`).

    Symlinks are resolved and every check is made before anything is created.
    """
    resolved = Path(os.path.realpath(path))
    home = os.path.realpath(os.path.expanduser("~"))
    shown = f"--work-root {path}" + (f" ({resolved})" if str(resolved) != str(path) else "")
    if (tree := _system_tree(str(resolved))) is not None:
        raise UserError(
            f"{shown}: refusing a directory under the system directory {tree}; "
            f"use a directory of its own, such as {DEFAULT_WORK_ROOT}"
        )
    if str(resolved) in _SYSTEM or str(resolved) == home:
        raise UserError(
            f"{shown}: refusing a system directory or the home directory; "
            f"use a directory of its own, such as {DEFAULT_WORK_ROOT}"
        )
    if resolved.exists():
        if not resolved.is_dir():
            raise UserError(f"{shown}: not a directory")
        check_work_root(str(resolved), shown)
        if any(resolved.iterdir()) and not (resolved / MARKER).exists():
            raise UserError(f"{shown}: a non-empty directory layerbench did not make; pass an empty or new directory")
    elif (why := _ancestors_error(str(resolved))) is not None:
        raise UserError(
            f"{shown}: {why}: another user could swap it; use a work root under directories only root can write"
        )
    try:
        resolved.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = open_dir(resolved)
        try:
            os.chmod(f"/proc/self/fd/{fd}", 0o700)  # the directory just checked, not a path again
            os.close(os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd))
        finally:
            os.close(fd)
    except OSError as exc:
        raise UserError(f"{shown}: cannot make it ours: {exc.strerror}") from None
    return resolved


def open_dir(path: Path | str) -> int:
    """An `O_PATH` fd of the existing directory `path`, which must be the running user's alone
    (`not_ours`) and reached without a symlink anywhere on the way (the fd's own path, as the
    kernel reports it, must be `path` made absolute). Raises `UserError` naming the path."""
    want = os.path.abspath(path)
    try:
        fd = os.open(want, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(want):
            raise UserError(f"{want}: a symlink (to {os.readlink(want)}); refusing to work in it") from None
        raise UserError(
            f"{want}: {exc.strerror} (a directory of the run, opened without following a symlink)"
        ) from None
    try:
        if (why := not_ours(os.fstat(fd))) is not None:
            raise UserError(f"{want}: {why}; refusing to work in it")
        got = os.readlink(f"/proc/self/fd/{fd}")
        if got != want:
            raise UserError(f"{want}: reached through a symlink (it is {got}); refusing to work in it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dir(path: Path | str, mode: int = 0o700) -> None:
    """mkdir `path` (its last component, `mode`) inside its parent as `open_dir` checks it: the
    new directory lands exactly there, never through a symlink. An existing one is an error."""
    parent = open_dir(os.path.dirname(os.path.abspath(path)))
    try:
        os.mkdir(os.path.basename(path), mode, dir_fd=parent)
    finally:
        os.close(parent)


def open_beneath(dirfd: int, rel: str, flags: int, mode: int = 0o600) -> int:
    """Open `rel` (relative, no `..`) below the directory `dirfd`, one component at a time,
    following no symlink on the way or at the end (`O_NOFOLLOW`, `O_CLOEXEC` added)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or ".." in parts:
        raise UserError(f"{rel!r}: not a path below its directory")
    fd = os.dup(dirfd)
    try:
        for name in parts[:-1]:
            nfd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return os.open(parts[-1] if parts else ".", flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)


def _writable(folder: Path, what: str) -> None:
    """Refuse `folder` unless a file can be made in it (root ignores mode bits, not a read-only mount)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{what}: cannot write in {folder}: {exc.strerror}") from None


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file `option PATH` that cannot be written."""
    what = f"{option} {path}"
    if path.is_dir():
        raise UserError(f"{what}: is a directory; name a file")
    if not path.parent.is_dir():
        raise UserError(f"{what}: no such directory {path.parent}")
    _writable(path.parent, what)


def check_output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, an output directory that cannot be made or written (checked
    on its nearest existing ancestor, where it would be made)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is not a directory")
    _writable(existing, f"{option} {path}")


def remove_tree(path: Path) -> None:
    """Remove `path` without following symlinks and without crossing into anything mounted.

    A mount still below `path` is an error (unmount first); missing is fine.
    """
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    mounted = mountinfo.points_below(os.path.realpath(path))
    if mounted:
        raise RuntimeError(f"refusing to remove {path}: still mounted below it: {', '.join(mounted)}")
    shutil.rmtree(path)
