"""Trees: a snapshot of a directory (what the conformance suite compares) and its differences."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Entry", "Tree", "snapshot", "compare"]

_MiB = 1 << 20


@dataclass(frozen=True)
class Entry:
    """What the suite compares of one path."""

    mode: int
    uid: int
    gid: int
    size: int | None  # regular files only
    digest: str | None  # sha256 of a regular file's bytes
    target: str | None  # a symlink's target
    rdev: int | None  # device nodes
    mtime_ns: int | None  # non-directories
    xattrs: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Tree:
    """Every path under a root ("." is the root) and its hardlink groups."""

    entries: dict[str, Entry]
    links: frozenset[frozenset[str]]


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user.")]
        return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
            return ()
        raise


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_MiB):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: Path) -> Tree:
    """Read the tree under `root` without following symlinks or crossing into other mounts."""
    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = ["."]
    while stack:
        rel = stack.pop()
        full = os.path.normpath(os.path.join(root, rel))
        st = os.lstat(full)
        kind = stat.S_IFMT(st.st_mode)
        entries[rel] = Entry(
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == stat.S_IFREG else None,
            digest=_digest(full) if kind == stat.S_IFREG else None,
            target=os.readlink(full) if kind == stat.S_IFLNK else None,
            rdev=st.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else None,
            # Directory mtimes move with every whiteout and copy-up; a symlink's mtime is not
            # kept by every copy-up (fuse-overlayfs resets it on chown), so neither is compared.
            mtime_ns=None if kind in (stat.S_IFDIR, stat.S_IFLNK) else st.st_mtime_ns,
            xattrs=_xattrs(full),
        )
        if kind == stat.S_IFDIR:
            stack.extend(os.path.join(rel, n) if rel != "." else n for n in os.listdir(full))
        else:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    links = frozenset(frozenset(paths) for paths in inodes.values() if len(paths) > 1)
    return Tree(entries=entries, links=links)


def _describe(e: Entry) -> str:
    parts = [f"{stat.filemode(e.mode)} {e.uid}:{e.gid}"]
    if e.size is not None:
        parts.append(f"{e.size} bytes sha256 {e.digest and e.digest[:12]}")
    if e.target is not None:
        parts.append(f"-> {e.target}")
    if e.rdev is not None:
        parts.append(f"rdev {os.major(e.rdev)}/{os.minor(e.rdev)}")
    if e.mtime_ns is not None:
        parts.append(f"mtime_ns {e.mtime_ns}")
    if e.xattrs:
        parts.append(f"xattrs {dict(e.xattrs)}")
    return " ".join(parts)


def compare(expected: Tree, actual: Tree) -> list[str]:
    """Differences between two trees, one line each; empty when they are equal."""
    out: list[str] = []
    for path in sorted(expected.entries.keys() - actual.entries.keys()):
        out.append(f"missing {path}: {_describe(expected.entries[path])}")
    for path in sorted(actual.entries.keys() - expected.entries.keys()):
        out.append(f"unexpected {path}: {_describe(actual.entries[path])}")
    for path in sorted(expected.entries.keys() & actual.entries.keys()):
        e, a = expected.entries[path], actual.entries[path]
        if e != a:
            out.append(f"differs {path}: expected {_describe(e)}; got {_describe(a)}")
    if expected.links != actual.links:
        show = lambda links: sorted(sorted(g) for g in links)  # noqa: E731
        out.append(f"hardlink groups: expected {show(expected.links)}; got {show(actual.links)}")
    return out
