"""composefs: a content-addressed object store under an EROFS metadata image, joined by overlayfs.

    <home>/objects/ab/cdef…          every regular file's bytes once, named by their sha256
                                     (shared by every layer and image in the store)
    <home>/layers/<id>/diff          the layer's changes while it is filled (a DIFF layer)
    <home>/layers/<id>/image.erofs   the metadata image of the layer's stack, made by seal_layer
    <home>/containers/<id>/upper     the container's upperdir (and work/, merged/, meta/)
    <home>/tmp/                      flattening scratch space

`seal_layer` flattens the layer's stack: it copies the parent's metadata image (mounted
read-only) as a skeleton, applies the layer's diff to it — whiteouts and opaque
directories are resolved here, the image has none — and moves each new file's bytes
into the object store (rename; content already there is dropped). In the skeleton a
regular file is a sparse file of the same size carrying `trusted.overlay.metacopy`
(empty) and `trusted.overlay.redirect` (`/ab/cdef…`), as containers/composefs
(`lcfs-writer-erofs.c`) writes them; `mkfs.erofs` turns the skeleton into the image.
erofs-utils 1.5 has no holes, so the sparse files' zeros are stored compressed with
tail packing (`-zlz4 -Eztailpacking`: about 0.6% of the files' bytes; `--chunksize=4096`
keeps a 4 KiB block per file size, several times more, and hashes every zero).

A container is what `lcfs-mount.c` makes: the image mounted as a file (an EROFS
file-backed mount, no loop device), an overlay with `metacopy=on,redirect_dir=on`,
the image mount as its lower and the object store as a data-only lower
(`lowerdir=META::OBJECTS`, or fsconfig `lowerdir+`/`datadir+`; drivers/_overlay.py),
then the image mount detached (overlay keeps its own reference). `mount` is two
mount(2) calls and an umount2. `commit` flattens the container's upper dir the
same way, following overlay's own metacopy and redirect xattrs there (chown and
rename copy up metadata only) to the parent image's entries; new bytes are copied
into the store, so the container keeps its upper intact. Removing a layer drops the
objects no other layer introduced. Both conversions are timed: in the layer build
and in `commit_ns`.

fs-verity (`verity=require`, digests in the metacopy xattr) is not done: this kernel
has no CONFIG_FS_VERITY, so a verity variant could not run anywhere it is tested.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from layerbench.kernel import syscalls
from layerbench.kernel.treecopy import copy_tree

from ._common import fs_in_kernel, remove_tree
from ._overlay import OverlayLayout, OverlayMount, mount_overlay

__all__ = ["ComposefsDriver", "MKFS_OPTIONS"]

METACOPY = "trusted.overlay.metacopy"
REDIRECT = "trusted.overlay.redirect"
OPAQUE = "trusted.overlay.opaque"
_OVERLAY_PREFIX = "trusted.overlay."
#: mkfs.erofs options for a metadata image (erofs-utils 1.5); see the module docstring
MKFS_OPTIONS = ("--quiet", "-zlz4", "-Eztailpacking")
_CHUNK = 1 << 20


# --- the object store ------------------------------------------------------------------


class ObjectStore:
    """Files named by the sha256 of their bytes: `<root>/ab/cdef…`, each content once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> str:
        return f"{self.root}/{digest[:2]}/{digest[2:]}"

    @staticmethod
    def redirect(digest: str) -> str:
        """The absolute redirect a metacopy file in the image carries to reach the object."""
        return f"/{digest[:2]}/{digest[2:]}"

    def _place(self, tmp: str, digest: str) -> bool:
        """Rename `tmp` to the object of `digest` unless it exists (then drop `tmp`); True if stored."""
        target = self.path(digest)
        if os.path.lexists(target):
            os.unlink(tmp)
            return False
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o444)
        os.rename(tmp, target)
        return True

    def adopt(self, path: str) -> str:
        """Move the file at `path` into the store (it is gone from `path`); return its digest."""
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        self._place(path, digest)
        return digest

    def copy_in(self, path: str, scratch: Path) -> str:
        """Copy the file at `path` into the store (hashing as it copies); return its digest."""
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=scratch)
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
            digest = h.hexdigest()
            self._place(tmp, digest)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        return digest


# --- flattening a diff onto the parent's tree ------------------------------------------


def _sparse(src: str, dst: str, mode: int, size: int) -> None:
    """A treecopy FileCopier for skeletons: a same-sized file with no data (its xattrs follow)."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def _own_xattrs(src: str, dst: str, clear: bool) -> None:
    """Give `dst` the xattrs of `src` that are not overlay's (and, with `clear`, only those)."""
    keep = {
        n: os.getxattr(src, n, follow_symlinks=False)
        for n in os.listxattr(src, follow_symlinks=False)
        if not n.startswith(_OVERLAY_PREFIX)
    }
    if clear:
        for name in os.listxattr(dst, follow_symlinks=False):
            if name not in keep and not name.startswith(_OVERLAY_PREFIX):
                os.removexattr(dst, name, follow_symlinks=False)
    for name, value in keep.items():
        os.setxattr(dst, name, value, follow_symlinks=False)


def _attrs(path: str, st: os.stat_result, times: bool = True) -> None:
    os.lchown(path, st.st_uid, st.st_gid)  # before chmod: chown clears setuid
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if times:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _lower_path(parent_lower: str | None, name: str, redirect: bytes | None) -> str | None:
    """Where overlay looks an upper entry up below: its redirect (absolute, or relative to the
    parent's lower directory), else the same name in the parent's lower directory."""
    if redirect is not None:
        text = os.fsdecode(redirect)
        if text.startswith("/"):
            return text.strip("/")
        return None if parent_lower is None else os.path.join(parent_lower, text)
    return None if parent_lower is None else os.path.join(parent_lower, name)


class _Flatten:
    """Apply one overlay diff (a layer's, or a container's upper) to a skeleton tree.

    `lower` is the parent image, mounted: the source of redirected directories and of
    the objects behind metacopy files. New file bytes go to the store: moved there
    (`move`, a layer's diff, discarded afterwards) or copied (a container's upper).
    """

    def __init__(self, store: ObjectStore, tree: str, lower: str | None, move: bool, scratch: Path) -> None:
        self.store, self.tree, self.lower, self.move, self.scratch = store, tree, lower, move, scratch
        self.digests: set[str] = set()
        self._links: dict[int, str] = {}  # diff inode -> first tree path, for hardlinks inside the diff

    def apply(self, diff: str) -> None:
        st = os.lstat(diff)
        _attrs(self.tree, st, times=False)
        _own_xattrs(diff, self.tree, clear=True)
        self._dir(diff, "", "" if self.lower else None)
        os.utime(self.tree, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _dir(self, diff: str, rel: str, lower_rel: str | None) -> None:
        with os.scandir(os.path.join(diff, rel)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = os.path.join(rel, entry.name)
            src, dst = entry.path, os.path.join(self.tree, path)
            st = entry.stat(follow_symlinks=False)
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFCHR and st.st_rdev == 0:  # a whiteout
                _remove(dst)
            elif kind == stat.S_IFDIR:
                self._subdir(diff, path, src, dst, st, lower_rel)
            elif st.st_ino in self._links:  # (moving the first path into the store may leave nlink 1)
                _remove(dst)
                os.link(os.path.join(self.tree, self._links[st.st_ino]), dst)
            else:
                if st.st_nlink > 1:
                    self._links[st.st_ino] = path
                self._leaf(src, dst, st, entry.name, lower_rel)

    def _subdir(self, diff: str, path: str, src: str, dst: str, st: os.stat_result, lower_rel: str | None) -> None:
        redirect = _xattr(src, REDIRECT)
        below = _lower_path(lower_rel, os.path.basename(path), redirect)
        if _xattr(src, OPAQUE) == b"y":
            _remove(dst)
            os.mkdir(dst)
            below = None
        elif redirect is not None:  # renamed in a container: the lower directory it came from, moved here
            _remove(dst)
            copy_tree(self._in_lower(below), dst, copy_file=_sparse)
        elif not (os.path.isdir(dst) and not os.path.islink(dst)):
            _remove(dst)
            os.mkdir(dst)
            below = None
        _attrs(dst, st, times=False)
        _own_xattrs(src, dst, clear=True)
        self._dir(diff, path, below)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _in_lower(self, rel: str | None) -> str:
        if self.lower is None or rel is None:
            raise OSError(errno.ENOENT, "an overlay redirect or metacopy file with nothing below it", rel)
        return os.path.join(self.lower, rel)

    def _leaf(self, src: str, dst: str, st: os.stat_result, name: str, lower_rel: str | None) -> None:
        _remove(dst)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFLNK:
            os.symlink(os.readlink(src), dst)
        elif kind == stat.S_IFREG:
            _sparse(src, dst, st.st_mode, st.st_size)
        else:
            os.mknod(dst, st.st_mode, st.st_rdev)
        _attrs(dst, st, times=False)  # before the xattrs: a chown drops security.capability
        _own_xattrs(src, dst, clear=False)
        if kind == stat.S_IFREG and (digest := self._content(src, st, name, lower_rel)) is not None:
            os.setxattr(dst, METACOPY, b"")  # after the xattrs are read: a layer's file is moved away here
            os.setxattr(dst, REDIRECT, ObjectStore.redirect(digest).encode())
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _content(self, src: str, st: os.stat_result, name: str, lower_rel: str | None) -> str | None:
        """The digest of a regular file's bytes (None for an empty file)."""
        if _xattr(src, METACOPY) is not None:  # copied up metadata only: the bytes are the lower file's
            behind = _xattr(self._in_lower(_lower_path(lower_rel, name, _xattr(src, REDIRECT))), REDIRECT)
            return None if behind is None else os.fsdecode(behind).replace("/", "")
        if st.st_size == 0:
            return None
        digest = self.store.adopt(src) if self.move else self.store.copy_in(src, self.scratch)
        self.digests.add(digest)
        return digest


# --- the driver ------------------------------------------------------------------------


def _mkfs(image: str, tree: str) -> None:
    proc = subprocess.run(["mkfs.erofs", *MKFS_OPTIONS, image, tree], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"mkfs.erofs {image} failed: {(proc.stderr or proc.stdout).strip()}")


def _mount_image(image: str, target: str) -> None:
    """Mount a metadata image read-only from its file (EROFS file-backed mount, Linux 6.12+)."""
    syscalls.mount(image, target, "erofs", syscalls.MS_RDONLY)


@functools.cache
def _self_test() -> tuple[str | None, str]:
    """Build, mount and read a one-file composefs in a temporary directory: (why not, mkfs.erofs version)."""
    with tempfile.TemporaryDirectory(prefix="layerbench-composefs-probe-") as tmp:
        objects, skel, meta, merged = (f"{tmp}/{n}" for n in ("objects", "skel", "meta", "merged"))
        for d in (objects, skel, meta, merged):
            os.mkdir(d)
        store = ObjectStore(Path(objects))
        with open(f"{tmp}/f", "wb") as f:
            f.write(b"composefs probe")
        digest = store.adopt(f"{tmp}/f")
        _sparse("", f"{skel}/f", 0o644, 15)
        os.setxattr(f"{skel}/f", METACOPY, b"")
        os.setxattr(f"{skel}/f", REDIRECT, store.redirect(digest).encode())
        proc = subprocess.run(["mkfs.erofs", f"{tmp}/meta.erofs", skel], capture_output=True, text=True)
        version = proc.stdout.splitlines()[0].strip() if proc.stdout else "?"
        if proc.returncode != 0:
            return f"mkfs.erofs failed: {(proc.stderr or proc.stdout).strip()}", version
        try:
            _mount_image(f"{tmp}/meta.erofs", meta)
        except OSError as exc:
            return f"the kernel cannot mount an EROFS image from a file (Linux 6.12+): {exc.strerror}", version
        try:
            try:
                mount_overlay(
                    merged, [meta], None, None, ComposefsDriver.mount_options, data_lowers=[objects], fsconfig=False
                )
            except OSError as exc:
                return (
                    f"overlayfs refuses a data-only lower with metacopy=on,redirect_dir=on (Linux 6.5+): {exc.strerror}"
                ), version
            try:
                with open(f"{merged}/f", "rb") as f:
                    data = f.read()
            finally:
                syscalls.umount(merged)
        finally:
            syscalls.umount(meta)
        if data != b"composefs probe":
            return "overlayfs did not follow a metacopy redirect into the data-only lower", version
        return None, version


class ComposefsDriver(OverlayLayout):
    """Podman's and bootc's composefs: objects by sha256, an EROFS metadata image, overlay."""

    name = "composefs"
    backings = ("ext4", "xfs", "btrfs")
    in_default_run = False
    mount_options = (("metacopy", "on"), ("redirect_dir", "on"))

    @classmethod
    def probe(cls) -> str | None:
        if reason := super().probe():
            return reason
        if not fs_in_kernel("erofs"):
            return "the kernel has no erofs filesystem (modprobe erofs; CONFIG_EROFS_FS)"
        if shutil.which("mkfs.erofs") is None:
            return "mkfs.erofs is not installed (apt-get install erofs-utils)"
        return _self_test()[0]

    @classmethod
    def versions(cls) -> dict[str, str]:
        if cls.probe() is not None:
            return {}
        return {"mkfs.erofs": _self_test()[1], "mkfs_options": " ".join(MKFS_OPTIONS)}

    def setup(self) -> None:
        super().setup()
        for d in ("objects", "layers", "containers", "tmp"):
            os.mkdir(self.home / d, 0o700)
        self.store = ObjectStore(self.home / "objects")
        #: how many live layers introduced each object, and which objects each layer introduced
        self._refs: Counter[str] = Counter()
        self._introduced: dict[str, set[str]] = {}

    # --- layout ------------------------------------------------------------------------

    def _layer(self, layer_id: str) -> Path:
        return self.home / "layers" / layer_id

    def _image(self, layer_id: str) -> Path:
        return self._layer(layer_id) / "image.erofs"

    def _container(self, container_id: str) -> Path:
        return self.home / "containers" / container_id

    def merged_dir(self, container_id: str) -> str:
        return str(self._container(container_id) / "merged")

    def overlay_of(self, container_id: str) -> OverlayMount:
        d = self._container(container_id)
        return OverlayMount(
            merged=str(d / "merged"),
            lowers=[str(d / "meta")],
            upper=str(d / "upper"),
            work=str(d / "work"),
            data_lowers=[str(self.store.root)],
        )

    # --- layers ------------------------------------------------------------------------

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.check_new(layer_id)
        if parent is not None and not self._image(parent).exists():
            raise FileNotFoundError(errno.ENOENT, "no sealed layer", parent)
        os.mkdir(self._layer(layer_id), 0o700)
        os.mkdir(self._layer(layer_id) / "diff", 0o755)
        self.lineage.add(layer_id, parent)
        return self._layer(layer_id) / "diff"

    def seal_layer(self, layer_id: str) -> None:
        diff = self._layer(layer_id) / "diff"
        self._flatten(layer_id, self.lineage.parent.get(layer_id), str(diff), move=True)
        remove_tree(diff)

    def _flatten(self, layer_id: str, parent: str | None, diff: str, move: bool) -> None:
        """Make `layer_id`'s image: the parent image's tree with `diff` applied, through mkfs.erofs."""
        scratch = self.home / "tmp"
        tree, lower = scratch / f"{layer_id}.tree", scratch / f"{layer_id}.lower"
        mounted = False
        try:
            if parent is None:
                os.mkdir(tree, 0o755)
            else:
                os.mkdir(lower)
                _mount_image(str(self._image(parent)), str(lower))
                mounted = True
                copy_tree(str(lower), str(tree), copy_file=_sparse)
            flat = _Flatten(self.store, str(tree), str(lower) if mounted else None, move, scratch)
            flat.apply(diff)
            _mkfs(str(self._image(layer_id)) + ".new", str(tree))
            os.rename(str(self._image(layer_id)) + ".new", self._image(layer_id))
        finally:
            if mounted:
                syscalls.umount(str(lower))
            remove_tree(tree)
            remove_tree(lower)
        self._introduced[layer_id] = flat.digests
        self._refs.update(flat.digests)

    # --- containers --------------------------------------------------------------------

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        if not self._image(image).exists():
            raise FileNotFoundError(errno.ENOENT, "no sealed layer", image)
        d = self._container(container_id)
        os.mkdir(d, 0o700)
        os.mkdir(d / "upper", 0o755)
        os.mkdir(d / "work", 0o700)
        os.mkdir(d / "meta", 0o700)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        meta = str(self._container(container_id) / "meta")
        _mount_image(str(self._image(str(self.lineage.parent[container_id]))), meta)
        try:
            return super().mount(container_id)
        finally:  # the overlay holds the image's superblock itself, as lcfs-mount.c relies on
            syscalls.umount(meta, syscalls.MNT_DETACH)

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
        os.mkdir(self._layer(layer_id), 0o700)
        self.lineage.add_commit(layer_id, container_id)
        try:
            self._flatten(
                layer_id, self.lineage.parent[layer_id], str(self._container(container_id) / "upper"), move=False
            )
        except BaseException:
            self.lineage.forget(layer_id)
            remove_tree(self._layer(layer_id))
            raise

    # --- removal -------------------------------------------------------------------------

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        if self._container(item_id).exists():
            remove_tree(self._container(item_id))
        else:
            remove_tree(self._layer(item_id))
            for digest in self._introduced.pop(item_id, set()):
                self._refs[digest] -= 1
                if self._refs[digest] <= 0:
                    del self._refs[digest]
                    os.unlink(self.store.path(digest))
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        data = {"ObjectStore": str(self.store.root)}
        if self._container(item_id).exists():
            d = self._container(item_id)
            image = self.lineage.parent.get(item_id)
            data.update(UpperDir=str(d / "upper"), WorkDir=str(d / "work"), MergedDir=str(d / "merged"))
            if image is not None:
                data["MetadataImage"] = str(self._image(image))
        else:
            data["MetadataImage"] = str(self._image(item_id))
        return data
