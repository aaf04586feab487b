"""Change sets: one change (an `Op`) applied to a plain tree, or written into a DIFF layer."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from layerbench.images.layer_encoding import OPAQUE_XATTR, make_whiteout, set_opaque
from layerbench.kernel.treecopy import copy_tree

__all__ = [
    "T0",
    "Op",
    "Mkdir",
    "File",
    "Append",
    "Symlink",
    "Link",
    "Remove",
    "Opaque",
    "Chown",
    "Chmod",
    "Rename",
    "SetXattr",
    "apply_to_diff",
    "set_attrs",
]

#: A fixed mtime (whole seconds) for everything the change sets create.
T0 = 1_600_000_000


class Op(Protocol):
    """One change. `apply` does it to a plain tree (or a mounted container's root)."""

    @property
    def path(self) -> str:
        """Where the change lands, relative to the root."""

    def apply(self, root: Path) -> str | None:
        """Make the change under `root`; return a note when it needed a fallback."""


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def set_attrs(path: Path, mode: int | None, uid: int, gid: int, mtime: int | None = None) -> None:
    os.lchown(path, uid, gid)  # before chmod: chown clears setuid/setgid
    if mode is not None:
        os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9), follow_symlinks=False)


@dataclass(frozen=True)
class Mkdir:
    """A directory; over an existing one only its attributes change (OCI merge)."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        if os.path.lexists(p) and not (p.is_dir() and not p.is_symlink()):
            _rm(p)
        if not p.exists():
            os.mkdir(p)
        set_attrs(p, self.mode, self.uid, self.gid)
        return None


@dataclass(frozen=True)
class File:
    """A regular file replacing whatever was at `path`."""

    path: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = T0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        _rm(p)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self.data)
        finally:
            os.close(fd)
        set_attrs(p, self.mode, self.uid, self.gid, self.mtime)
        return None


@dataclass(frozen=True)
class Append:
    """Append to an existing file in place (a copy-up on a union driver), then set its mtime."""

    path: str
    data: bytes
    mtime: int = T0 + 1

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, self.data)
        finally:
            os.close(fd)
        os.utime(p, ns=(self.mtime * 10**9, self.mtime * 10**9))
        return None


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = T0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        _rm(p)
        os.symlink(self.target, p)
        set_attrs(p, None, self.uid, self.gid, self.mtime)
        return None


@dataclass(frozen=True)
class Link:
    """A hardlink at `path` to the existing file `target`."""

    path: str
    target: str

    def apply(self, root: Path) -> str | None:
        os.link(root / self.target, root / self.path)
        return None


@dataclass(frozen=True)
class Remove:
    """Remove `path` (recursively). In a DIFF layer it becomes a 0/0 character device."""

    path: str

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        if not os.path.lexists(p):
            raise FileNotFoundError(errno.ENOENT, "nothing to remove", str(p))
        _rm(p)
        return None


@dataclass(frozen=True)
class Opaque:
    """Replace directory `path` with an empty one, hiding every lower child (an opaque dir)."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0

    def apply(self, root: Path) -> str | None:
        p = root / self.path
        _rm(p)
        os.mkdir(p)
        set_attrs(p, self.mode, self.uid, self.gid)
        return None


@dataclass(frozen=True)
class Chown:
    path: str
    uid: int
    gid: int

    def apply(self, root: Path) -> str | None:
        os.lchown(root / self.path, self.uid, self.gid)
        return None


@dataclass(frozen=True)
class Chmod:
    path: str
    mode: int

    def apply(self, root: Path) -> str | None:
        os.chmod(root / self.path, self.mode)
        return None


@dataclass(frozen=True)
class Rename:
    """rename(2); where the driver answers EXDEV, do what mv(1) does: copy, then remove."""

    path: str
    dest: str

    def apply(self, root: Path) -> str | None:
        src, dst = root / self.path, root / self.dest
        try:
            os.rename(src, dst)
            return None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        if src.is_dir() and not src.is_symlink():
            copy_tree(str(src), str(dst))
        else:
            shutil.copy2(src, dst, follow_symlinks=False)
            st = os.lstat(src)
            os.lchown(dst, st.st_uid, st.st_gid)
        _rm(src)
        return f"rename {self.path} -> {self.dest}: EXDEV, copied and removed as mv(1) does"


@dataclass(frozen=True)
class SetXattr:
    path: str
    name: str
    value: bytes

    def apply(self, root: Path) -> str | None:
        os.setxattr(root / self.path, self.name, self.value, follow_symlinks=False)
        return None


# By name, not class: the suite may be imported under two module names (--pyargs from a checkout).
#: the changes a layer can carry; the others change a lower entry (a container step)
_LAYER_OPS = (Mkdir, File, Symlink, Link, Remove, Opaque, SetXattr)


def _ensure_parents(diff: Path, ref: Path, rel: str) -> None:
    """Create the parents of `rel` in a DIFF layer with the attributes the reference has."""
    parts = Path(rel).parts[:-1]
    for i in range(len(parts)):
        sub = Path(*parts[: i + 1])
        if os.path.lexists(diff / sub):
            continue
        os.mkdir(diff / sub)
        try:
            st = os.lstat(ref / sub)
            set_attrs(diff / sub, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        except FileNotFoundError:
            set_attrs(diff / sub, 0o755, 0, 0)


def apply_to_diff(op: Op, diff: Path, ref: Path, opaque_xattr: str = OPAQUE_XATTR) -> None:
    """Write `op` into an empty-at-first DIFF layer: whiteouts and opaque dirs in overlay's format.

    `ref` is the reference tree with the whole change set already applied; parents
    created here copy its attributes. `opaque_xattr` is the driver's (`Driver.opaque_xattr`).
    """
    if not isinstance(op, _LAYER_OPS):
        raise ValueError(f"{type(op).__name__} changes a lower entry: apply it in a container step")
    _ensure_parents(diff, ref, op.path)
    p = diff / op.path
    if isinstance(op, Remove):
        _rm(p)
        make_whiteout(p)
    elif isinstance(op, Opaque):
        op.apply(diff)
        set_opaque(p, opaque_xattr)
    elif isinstance(op, Link) and not os.path.lexists(diff / op.target):
        raise ValueError(f"hardlink {op.path} -> {op.target}: the target must be in the same layer")
    else:
        op.apply(diff)
