"""Apply one image layer's entries onto a driver's layer directory, safely, with OCI semantics.

An entry (`Entry`: a name, a kind, mode, owner, time, xattrs, a link target or device
numbers) comes from a tar stream (images/layer_tar.py) or a host directory
(images/layer_dir.py); `Applier` applies entries in order through file descriptors.
Every parent directory is opened by openat2(2) with `RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS` relative to the one above it, starting at the layer root
(kernel/confined.py, the home of confined file ops), and every new file is created the
same way, so no entry (and no symlink an earlier entry made) can send a write outside
the root: the kernel refuses it even if a check here were missed. Unsafe entries stop
the layer with one `UserError` naming them.

`LayerFormat.FULL` (vfs, btrfs): the root holds the parent's tree; a whiteout
deletes, an opaque marker empties the directory's lower children.
`LayerFormat.DIFF` (overlay2): the root holds this layer only; a whiteout becomes
a 0/0 character device and an opaque directory gets the driver's opaque xattr
(`trusted.overlay.opaque=y` by default). A `LowerTree` (images/lower_tree.py) passed
along stands in for the lower layers the root does not hold, so DIFF refuses exactly
what FULL refuses.

Work is bounded: the bytes written stop at a `SizeLimit` (by default the free disk of
the root's filesystem), new inodes at its free inodes, names at NAME_MAX and PATH_MAX.
The whiteout and opaque encoding is layer_encoding.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

from layerbench.driver import LayerFormat
from layerbench.errors import UserError
from layerbench.images.layer_encoding import (
    OPAQUE_MARKER,
    OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    is_whiteout,
    make_whiteout,
    mechanism_xattr,
    set_opaque,
)
from layerbench.images.layer_stream import SizeLimit, free_disk_limit, tighter
from layerbench.images.lower_tree import LowerTree
from layerbench.kernel import confined

__all__ = ["Applier", "Entry", "LayerStats", "SymlinkPolicy", "NAME_MAX", "PATH_MAX", "SKIPPED_LISTED"]

#: what a layer (and an image, and a cell) lists of what its import did not apply; more is not kept
SKIPPED_LISTED = 1000

#: "refuse" an absolute symlink target, or rewrite it as a relative one inside the root
SymlinkPolicy = Literal["refuse", "relative"]

_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_SKIP = (errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ERANGE, errno.E2BIG, errno.ENOSPC)
NAME_MAX, PATH_MAX = 255, 4096  # bytes of one name, of a path with its NUL (Linux)


@dataclass
class LayerStats:
    """What one layer application did (counts of entries by kind, bytes written)."""

    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0  # char/block devices and fifos
    whiteouts: int = 0
    opaques: int = 0
    bytes: int = 0
    xattrs: int = 0
    #: what was not applied and why, e.g. "dev/null: device nodes need root" (the first `SKIPPED_LISTED`)
    skipped: list[str] = field(default_factory=list)

    def skip(self, what: str) -> None:
        """Note what was not applied and why: listed up to `SKIPPED_LISTED` (an image of a million device
        nodes holds no list of a million in memory)."""
        if len(self.skipped) < SKIPPED_LISTED:
            self.skipped.append(what)


@dataclass
class Entry:
    """One layer entry, whatever it was read from."""

    name: str  # as written in the source, for messages
    kind: str  # file dir symlink hardlink char block fifo
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    linkname: str = ""
    major: int = 0
    minor: int = 0
    size: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def _split(applier: Applier, e: Entry, name: str, what: str = "path") -> tuple[str, ...]:
    if name.startswith("/"):
        applier.fail(e, f"absolute {what} {name!r}: path escapes the layer root")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        applier.fail(e, f"{what} {name!r} has a '..' component: path escapes the layer root")
    if any("\x00" in p for p in parts):
        applier.fail(e, f"{what} has a NUL byte")
    sizes = [len(p.encode("utf-8", "surrogateescape")) for p in parts]
    if sizes and max(sizes) > NAME_MAX:
        applier.fail(e, f"{what} has a name of {max(sizes)} bytes; at most {NAME_MAX} (NAME_MAX)")
    if sum(sizes) + len(sizes) > PATH_MAX - 1:
        applier.fail(e, f"{what} is {sum(sizes) + len(sizes)} bytes long; at most {PATH_MAX - 1} (PATH_MAX)")
    return parts


class Applier:
    """Applies entries one by one below `root`, through directory file descriptors."""

    def __init__(
        self,
        root: Path,
        layer_format: LayerFormat,
        source: str,
        symlinks: SymlinkPolicy,
        *,
        limit: SizeLimit | None = None,
        lower: LowerTree | None = None,
        opaque_xattr: str = OPAQUE_XATTR,
    ) -> None:
        self.diff = layer_format is LayerFormat.DIFF
        self.source, self.symlinks = source, symlinks
        self.lower = lower if self.diff else None
        self.opaque_xattr = opaque_xattr
        self.root_fd = os.open(root, _ROOT_FLAGS)  # the driver's own directory, by its path
        self.limit = tighter(limit, free_disk_limit(self.root_fd, "the layer's filesystem"))
        sv = os.statvfs(self.root_fd)
        self.inodes_left = sv.f_favail - min(sv.f_favail // 10, 100_000) if sv.f_files else None
        self.is_root = os.geteuid() == 0
        self.stats = LayerStats()
        self.written: set[tuple[str, ...]] = {()}  # paths this layer wrote, and their ancestors
        self.opaque: set[tuple[str, ...]] = set()  # directories this layer made opaque
        self.dir_times: dict[tuple[str, ...], int] = {}
        self.current = ""  # the entry being applied, for messages
        self._parent: tuple[tuple[str, ...], int] | None = None  # cached fd of the last parent

    def close(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None
        os.close(self.root_fd)

    def fail(self, e: Entry, what: str) -> NoReturn:
        name = e.name if len(e.name) <= 100 else e.name[:100] + "..."
        raise UserError(f"{self.source}: entry {name!r}: {what}")

    # -- walking ---------------------------------------------------------------------------

    def _walk(self, e: Entry, parts: tuple[str, ...], create: bool, revive: bool = False) -> int | None:
        """A new fd of directory `parts` (no symlink followed); None if missing and not `create`.

        On DIFF, a directory missing here is looked up in the lower tree (refused through a
        lower symlink or non-directory, as FULL would), and a whiteout this layer left on
        the way counts as missing: `revive` makes it an opaque directory, else None.
        """
        fd = os.dup(self.root_fd)
        try:
            for i, comp in enumerate(parts):
                here = parts[: i + 1]
                try:
                    nfd = confined.opendir(fd, comp)
                except FileNotFoundError:
                    self._below(e, here)
                    if not create:
                        os.close(fd)
                        return None
                    self._new_inode(e)
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = confined.opendir(fd, comp)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                    if self.diff and is_whiteout(st):  # removed by this layer: FULL would find nothing
                        if not revive:
                            os.close(fd)
                            return None
                        os.unlink(comp, dir_fd=fd)
                        os.mkdir(comp, 0o755, dir_fd=fd)
                        nfd = confined.opendir(fd, comp)
                        self._mark(here)
                        self._set_opaque(e, nfd, here)
                    else:
                        self._not_a_dir(e, here, stat.S_ISLNK(st.st_mode))
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _not_a_dir(self, e: Entry, parts: tuple[str, ...], symlink: bool) -> NoReturn:
        where = "/".join(parts)
        if symlink:
            self.fail(e, f"parent {where!r} is a symlink; refusing to go through it")
        self.fail(e, f"parent {where!r} is not a directory")

    def _lower_kind(self, parts: tuple[str, ...]) -> str | None:
        """What the layers below hold at `parts` where this DIFF layer does not hide it."""
        if self.lower is None or any(parts[:i] in self.opaque for i in range(len(parts))):
            return None
        return self.lower.kind(parts)

    def _below(self, e: Entry, parts: tuple[str, ...]) -> None:
        """Refuse a DIFF path through a lower symlink or non-directory, as FULL does."""
        kind = self._lower_kind(parts)
        if kind in ("symlink", "other"):
            self._not_a_dir(e, parts, kind == "symlink")

    def _new_inode(self, e: Entry) -> None:
        if self.inodes_left is not None:
            self.inodes_left -= 1
            if self.inodes_left < 0:
                self.fail(e, "more new files than the free inodes of the layer's filesystem (less a margin)")

    def parent(self, e: Entry, parts: tuple[str, ...], create: bool = True, revive: bool = True) -> int | None:
        """The (cached) fd of the directory holding `parts`."""
        key = parts[:-1]
        if self._parent is not None and self._parent[0] == key:
            return self._parent[1]
        fd = self._walk(e, key, create, revive)
        if fd is None:
            return None
        if self._parent is not None:
            os.close(self._parent[1])
        self._parent = (key, fd)
        return fd

    def _mark(self, parts: tuple[str, ...]) -> None:
        for i in range(len(parts) + 1):
            self.written.add(parts[:i])

    @staticmethod
    def _lstat(pfd: int, base: str) -> os.stat_result | None:
        try:
            return os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, pfd: int, base: str, st: os.stat_result) -> None:
        if self._parent is not None and self._parent[1] != pfd:  # it may hold the cached parent
            os.close(self._parent[1])
            self._parent = None
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def _prune(self, fd: int, parts: tuple[str, ...]) -> None:
        """Remove everything below directory `fd` that this layer did not write."""
        for name in os.listdir(fd):
            child = (*parts, name)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if child not in self.written:
                self._remove(fd, name, st)
            elif stat.S_ISDIR(st.st_mode):
                cfd = confined.opendir(fd, name)
                try:
                    self._prune(cfd, child)
                finally:
                    os.close(cfd)

    # -- metadata --------------------------------------------------------------------------

    def _xattrs(self, e: Entry, target: int | str) -> None:
        for key, value in e.xattrs.items():
            if "\0" in key or not key:
                self.fail(e, f"an xattr name {key!r} that is empty or holds a NUL byte")
            if (mechanism := mechanism_xattr(key)) is not None:  # never let a layer steer a mechanism
                self.stats.skip(f"{e.name}: xattr {key} ({mechanism}'s own metadata)")
                continue
            try:
                os.setxattr(target, key, value, follow_symlinks=isinstance(target, int))
                self.stats.xattrs += 1
            except OSError as exc:
                if exc.errno not in _XATTR_SKIP:
                    raise
                self.stats.skip(f"{e.name}: xattr {key}: {os.strerror(exc.errno or 0)}")

    def _owner_mode(self, e: Entry, fd: int) -> None:
        if self.is_root:
            os.fchown(fd, e.uid, e.gid)  # before chmod: chown clears setuid
        os.fchmod(fd, e.mode & 0o7777)
        self._xattrs(e, fd)

    def _set_opaque(self, e: Entry, fd: int, parts: tuple[str, ...]) -> None:
        try:
            set_opaque(fd, self.opaque_xattr)
        except OSError as exc:
            why = os.strerror(exc.errno or 0)
            self.fail(e, f"cannot mark an overlay opaque directory with {self.opaque_xattr} ({why})")
        self.opaque.add(parts)
        self.stats.opaques += 1

    # -- entries ---------------------------------------------------------------------------

    def apply(self, e: Entry, data: Callable[[int], int] | None = None, whiteouts: bool = True) -> None:
        """Apply one entry; `data(fd)` writes a regular file's content and returns its size."""
        self.stats.entries += 1
        self.current = e.name
        try:
            self._apply(e, data, whiteouts)
        except confined.Escape as exc:  # the kernel refused a way out that the checks here let through
            self.fail(e, f"path escapes the layer root ({exc})")

    def _apply(self, e: Entry, data: Callable[[int], int] | None, whiteouts: bool) -> None:
        parts = _split(self, e, e.name)
        if whiteouts and any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
            self.fail(e, "a whiteout name used as a directory")
        if whiteouts and parts and parts[-1].startswith(WHITEOUT_PREFIX):
            return self._whiteout(e, parts)
        if not parts:
            if e.kind != "dir":
                self.fail(e, "names the layer root but is not a directory")
            self._owner_mode(e, self.root_fd)
            self.dir_times[()] = e.mtime_ns
            return None
        # Validate what does not depend on the tree before anything is written.
        target = self._symlink_target(e, parts) if e.kind == "symlink" else ""
        link_parts = _split(self, e, e.linkname, "hardlink target") if e.kind == "hardlink" else ()
        if e.kind == "hardlink" and (not link_parts or link_parts == parts):
            self.fail(e, f"hardlink target {e.linkname!r} is not another file of the layer")
        if e.kind in ("char", "block") and not self.is_root:
            self.stats.skip(f"{e.name}: device nodes need root")
            return None
        pfd = self.parent(e, parts)
        assert pfd is not None
        base = parts[-1]
        st = self._lstat(pfd, base)
        if e.kind == "dir" and st is not None and stat.S_ISDIR(st.st_mode):
            return self._dir(e, parts, pfd, base, merge=True)
        symlink_below = st is None and self._lower_kind(parts) == "symlink"
        if e.kind == "dir" and ((st is not None and stat.S_ISLNK(st.st_mode)) or symlink_below):
            self.fail(e, "a directory entry over a symlink")
        if e.kind == "hardlink":
            return self._hardlink(e, parts, pfd, base, st, link_parts)
        was_whiteout = self.diff and st is not None and is_whiteout(st)
        if st is not None:
            self._remove(pfd, base, st)
        self._new_inode(e)
        self._mark(parts)
        if e.kind == "file":
            self._file(e, pfd, base, data)
        elif e.kind == "dir":
            self._dir(e, parts, pfd, base, merge=False, opaque=was_whiteout)
        elif e.kind == "symlink":
            try:
                os.symlink(target, base, dir_fd=pfd)
            except OSError as exc:
                if exc.errno not in (errno.ENAMETOOLONG, errno.EINVAL):
                    raise
                self.fail(e, f"a symlink target this filesystem cannot hold ({exc.strerror})")
            self._finish_path(e, pfd, base, chmod=False)
            self.stats.symlinks += 1
        else:
            if e.kind == "fifo":
                os.mkfifo(base, 0o600, dir_fd=pfd)
            else:
                kind = stat.S_IFCHR if e.kind == "char" else stat.S_IFBLK
                try:
                    os.mknod(base, kind | 0o600, os.makedev(e.major, e.minor), dir_fd=pfd)
                except PermissionError:  # root in a user namespace (overlay2-rootless) makes no device node
                    self.stats.skip(f"{e.name}: device nodes need root in the initial user namespace")
                    return None
            self._finish_path(e, pfd, base, chmod=True)
            self.stats.devices += 1
        return None

    def _hardlink(
        self,
        e: Entry,
        parts: tuple[str, ...],
        pfd: int,
        base: str,
        st: os.stat_result | None,
        link_parts: tuple[str, ...],
    ) -> None:
        tfd, tbase = self._check_link_target(e, link_parts)
        try:
            if st is not None:
                self._remove(pfd, base, st)
            self._mark(parts)
            try:
                os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                self.fail(e, f"hardlink target {e.linkname!r} went away with the path it replaces")
        finally:
            os.close(tfd)
        self.stats.hardlinks += 1

    def _file(self, e: Entry, pfd: int, base: str, data: Callable[[int], int] | None) -> None:
        if self.stats.bytes + e.size > self.limit.left:  # a sparse tar member writes more than it reads
            raise self.limit.error(self.source, "written")
        fd = confined.openat2(pfd, base, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if data is not None:
                self.stats.bytes += data(fd)
            self._owner_mode(e, fd)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)
        self.stats.files += 1

    def _dir(self, e: Entry, parts: tuple[str, ...], pfd: int, base: str, merge: bool, opaque: bool = False) -> None:
        if not merge:
            os.mkdir(base, 0o700, dir_fd=pfd)
        self._mark(parts)
        fd = confined.opendir(pfd, base)
        try:
            self._owner_mode(e, fd)
            if opaque:  # DIFF: a lower dir removed and recreated in this layer
                self._set_opaque(e, fd, parts)
        finally:
            os.close(fd)
        self.dir_times[parts] = e.mtime_ns
        self.stats.dirs += 1

    def _finish_path(self, e: Entry, pfd: int, base: str, chmod: bool) -> None:
        if self.is_root:
            os.chown(base, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:
            os.chmod(base, e.mode & 0o7777, dir_fd=pfd)
        if e.xattrs:
            self._xattrs(e, f"/proc/self/fd/{pfd}/{base}")
        os.utime(base, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _symlink_target(self, e: Entry, parts: tuple[str, ...]) -> str:
        target, depth = e.linkname, len(parts) - 1
        if not target or "\x00" in target:
            self.fail(e, "empty symlink target")
        if len(target.encode("utf-8", "surrogateescape")) > PATH_MAX - 1:
            self.fail(e, f"symlink target is longer than {PATH_MAX - 1} bytes (PATH_MAX)")
        if target.startswith("/"):
            if self.symlinks == "refuse":
                self.fail(e, f"symlink target {target!r} is absolute: it points outside the layer root")
            rest = "/".join(p for p in target.split("/") if p not in ("", "."))
            target = "/".join([".."] * depth + [rest]) if depth else (rest or ".")
            target = target.rstrip("/") or "."
        comps = [p for p in target.split("/") if p not in ("", ".")]
        ups = 0
        while ups < len(comps) and comps[ups] == "..":
            ups += 1
        if ".." in comps[ups:]:
            self.fail(e, f"symlink target {e.linkname!r} has '..' after a name; refusing to resolve it")
        if ups > depth:
            self.fail(e, f"symlink target {e.linkname!r} climbs out of the layer root")
        return target

    def _check_link_target(self, e: Entry, link_parts: tuple[str, ...]) -> tuple[int, str]:
        tfd = self._walk(e, link_parts[:-1], create=False)
        st = None if tfd is None else self._lstat(tfd, link_parts[-1])
        if st is not None and self.diff and is_whiteout(st):  # removed by this layer, as on FULL
            st = None
        if tfd is None or st is None:
            if tfd is not None:
                os.close(tfd)
            self.fail(e, f"hardlink target {e.linkname!r} does not exist in the layer")
        if stat.S_ISDIR(st.st_mode):
            os.close(tfd)
            self.fail(e, f"hardlink target {e.linkname!r} is a directory")
        return tfd, link_parts[-1]

    def _whiteout(self, e: Entry, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        if base == OPAQUE_MARKER:
            return self._opaque(e, parts[:-1])
        if base.startswith(WHITEOUT_PREFIX * 2):  # other AUFS metadata (.wh..wh.plnk ...)
            self.stats.skip(f"{e.name}: AUFS metadata")
            return None
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            self.fail(
                e,
                "a whiteout must name a file in its directory"
                if name != ".."
                else "whiteout name climbs out of its directory",
            )
        victim = (*parts[:-1], name)
        pfd = self.parent(e, victim, create=self.diff, revive=False)
        self.stats.whiteouts += 1
        if pfd is None:  # nothing below to hide
            return None
        st = self._lstat(pfd, name)
        if victim in self.written and st is not None:  # whiteouts hide lower layers only
            if stat.S_ISDIR(st.st_mode):
                fd = confined.opendir(pfd, name)
                try:
                    self._set_opaque(e, fd, victim) if self.diff else self._prune(fd, victim)
                finally:
                    os.close(fd)
            return None
        if st is not None:
            self._remove(pfd, name, st)
        if self.diff:
            self._new_inode(e)
            try:
                make_whiteout(name, pfd)
            except OSError as exc:
                self.fail(e, f"cannot make an overlay whiteout ({os.strerror(exc.errno or 0)}; needs root)")
        return None

    def _opaque(self, e: Entry, dparts: tuple[str, ...]) -> None:
        fd = self._walk(e, dparts, create=self.diff)
        if fd is None:
            return None
        try:
            if self.diff:
                self._mark(dparts)
                self._set_opaque(e, fd, dparts)
            else:
                self._prune(fd, dparts)
                self.stats.opaques += 1
        finally:
            os.close(fd)
        return None

    def finish(self) -> None:
        """Set directory mtimes last, once their contents stopped changing."""
        for parts, mtime in self.dir_times.items():
            if not parts:
                os.utime(self.root_fd, ns=(mtime, mtime))
                continue
            fd = self._walk(Entry(name="/".join(parts), kind="dir"), parts[:-1], create=False)
            if fd is None:
                continue
            try:
                st = self._lstat(fd, parts[-1])
                if st is not None and stat.S_ISDIR(st.st_mode):
                    os.utime(parts[-1], ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
