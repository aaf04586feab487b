"""Backing stores: a fresh loop-mounted filesystem per cell, so disk usage is exact."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from layerbench.environment import LOOP_IO
from layerbench.errors import UserError
from layerbench.kernel import loopdev, mountinfo, pagecache, safety, syscalls
from layerbench.kernel.safety import remove_tree
from layerbench.run.ledger import Ledger

__all__ = [
    "BackingStore",
    "MKFS",
    "MKFS_OPTIONS",
    "mkfs_options",
    "Usage",
    "usage",
    "allocated_bytes",
    "loop_direct_io",
    "mkfs_versions",
    "unavailable",
    "copy_backing_file",
    "forget_pages",
]

#: mkfs command per backing filesystem; the path argument is appended. `MKFS_OPTIONS` are the options that
#: make every store of a backing alike whatever its size (mkfs tools pick some by size), recorded per cell.
MKFS: dict[str, list[str]] = {
    # With its journal, as /var/lib/docker has it (without one, ext4 here slows tenfold on
    # creating files after a large delete); inode tables written now, not by a background thread.
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
}
MKFS_OPTIONS: dict[str, list[str]] = {
    # mke2fs takes the "small" type under 512 MiB: 1 KiB blocks, 128-byte inodes, an inode per 4 KiB, so a
    # 512-byte file took 1 KiB there and 4 KiB on a larger store; these are its "default" type's values
    "ext4": ["-b", "4096", "-I", "256", "-i", "16384"],
    # btrfs-progs' defaults since 5.15 (mixed block groups are never chosen for us; DUP metadata on one device)
    "btrfs": ["--nodesize", "16384", "--sectorsize", "4096", "-m", "dup", "-d", "single"],
    # xfs: 4 KiB blocks, 512-byte inodes, four allocation groups whatever the size
    "xfs": ["-b", "size=4096", "-i", "size=512", "-d", "agcount=4"],
}
MIN_SIZE = {"ext4": 64 << 20, "btrfs": 256 << 20, "xfs": 320 << 20}
#: "dir" is a plain directory: the fallback where loop devices are not allowed.
BACKINGS = (*MKFS, "dir")


def mkfs_options(fstype: str) -> str:
    """The mkfs options that fix a store's layout, as a cell records them ("" for a plain directory)."""
    return " ".join(MKFS_OPTIONS.get(fstype, []))


def unavailable(fstype: str) -> str | None:
    """None when a backing store of `fstype` can be made here, else why not."""
    if fstype == "dir":
        return None
    if os.geteuid() != 0:
        return "loop-mounted filesystems need root"
    if shutil.which(MKFS[fstype][0]) is None:
        return f"{MKFS[fstype][0]} is not installed"
    return None


def _run(cmd: list[str], fd: int | None = None) -> str:
    """Run `cmd`; `fd` stays open in it (as /proc/self/fd/FD: a file opened without following a symlink)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, pass_fds=() if fd is None else (fd,))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def mkfs_versions(fstypes: list[str]) -> dict[str, str]:
    """Version strings of the mkfs binaries for `fstypes` (those that are installed)."""
    out: dict[str, str] = {}
    for fs in fstypes:
        exe = MKFS[fs][0]
        if shutil.which(exe) is None:
            continue
        flag = "-V"
        proc = subprocess.run([exe, flag], capture_output=True, text=True)
        text = (proc.stdout or proc.stderr).strip().splitlines()
        out[exe] = text[0] if text else "?"
    return out


@dataclass(frozen=True)
class Usage:
    """Used bytes and inodes of a filesystem, read after syncfs; `inodes` is None where the
    filesystem has no inode count (btrfs allocates inodes on demand and reports 0 of 0)."""

    bytes: int
    inodes: int | None


def usage(path: Path) -> Usage:
    """The filesystem's own accounting (statvfs) after syncfs(2)."""
    syscalls.syncfs(str(path))
    st = os.statvfs(path)
    inodes = st.f_files - st.f_ffree if st.f_files else None
    return Usage(bytes=(st.f_blocks - st.f_bfree) * st.f_frsize, inodes=inodes)


# FS_IOC_FIEMAP (linux/fiemap.h): a 32-byte header, then 56-byte extents.
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_LAST, _FIEMAP_EXTENT_DATA_INLINE, _FIEMAP_EXTENT_SHARED = 0x1, 0x200, 0x2000
_HEADER, _EXTENT = struct.Struct("=QQIIII"), struct.Struct("=QQQ16xI12x")
_BATCH = 256


def _extents(fd: int) -> list[tuple[int, int, int]]:
    """Every (physical, length, flags) extent of the open file, after writing it back (FIEMAP_FLAG_SYNC)."""
    out: list[tuple[int, int, int]] = []
    start = 0
    while True:
        buf = bytearray(_HEADER.pack(start, (1 << 64) - 1 - start, _FIEMAP_FLAG_SYNC, 0, _BATCH, 0))
        buf += bytes(_EXTENT.size * _BATCH)
        fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf)
        mapped = _HEADER.unpack_from(buf)[3]
        if mapped == 0:
            return out
        last = False
        for i in range(mapped):
            logical, physical, length, flags = _EXTENT.unpack_from(buf, _HEADER.size + i * _EXTENT.size)
            out.append((physical, length, flags))
            start = logical + length
            last = bool(flags & _FIEMAP_EXTENT_LAST)
        if last or mapped < _BATCH:
            return out


def _file_bytes(path: str, st: os.stat_result, shared: list[tuple[int, int]]) -> int:
    """A regular file's bytes of its own extents; its shared extents go to `shared` to be counted once.

    Data stored inline in the filesystem's metadata (small files on btrfs) is metadata
    here, as for `btrfs filesystem du`. Where FIEMAP is not supported (tmpfs, FUSE), the
    file's allocated blocks (st_blocks).
    """
    if st.st_blocks == 0:
        return 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return st.st_blocks * 512
    try:
        extents = _extents(fd)
    except OSError:
        return st.st_blocks * 512
    finally:
        os.close(fd)
    own = 0
    for physical, length, flags in extents:
        if flags & _FIEMAP_EXTENT_DATA_INLINE:
            continue
        if flags & _FIEMAP_EXTENT_SHARED:
            shared.append((physical, physical + length))
        else:
            own += length
    return own


def _union(ranges: list[tuple[int, int]]) -> int:
    """Bytes covered by the union of [start, end) ranges."""
    total, reach = 0, -1
    for start, end in sorted(ranges):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def allocated_bytes(root: Path) -> int:
    """Bytes of disk the files under `root` take, each physical extent once, not descending into other mounts.

    Regular files are mapped with FIEMAP: an extent marked FIEMAP_EXTENT_SHARED (a reflink,
    a snapshot's) joins a union of physical ranges, so it counts once however many files
    share it; other inodes (directories, symlinks) count their allocated blocks. The walk
    stays on one filesystem, so physical addresses are comparable. Filesystem metadata
    (b-trees, inline data, journals, inode tables) is not in it: the statvfs delta includes it.
    """
    skip = set(mountinfo.mount_points()) - {str(root)}
    seen: set[tuple[int, int]] = set()
    shared: list[tuple[int, int]] = []
    total = 0
    stack = [str(root)]

    def count(path: str, st: os.stat_result) -> int:
        if (st.st_dev, st.st_ino) in seen:
            return 0
        seen.add((st.st_dev, st.st_ino))
        return _file_bytes(path, st, shared) if stat.S_ISREG(st.st_mode) else st.st_blocks * 512

    while stack:
        top = stack.pop()
        total += count(top, os.lstat(top))
        with os.scandir(top) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    if entry.path not in skip:
                        stack.append(entry.path)
                    continue
                total += count(entry.path, entry.stat(follow_symlinks=False))
    return total + _union(shared)


def loop_direct_io(device: str) -> bool:
    """Whether the kernel runs loop `device` with direct I/O (/sys/block/loopN/loop/dio)."""
    return Path(f"/sys/block/{Path(device).name}/loop/dio").read_text().strip() == "1"


def _count_inodes(root: Path) -> int:
    seen = set()
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            seen.add(st.st_ino)
    return len(seen)


_FICLONE = 0x40049409


def forget_pages(path: Path) -> None:
    """Write the file back and drop its pages from the host's page cache (POSIX_FADV_DONTNEED)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pagecache.drop_pages(fd)
    finally:
        os.close(fd)


def copy_backing_file(source: Path, target: int) -> str:
    """Copy a backing file into the open, empty file `target`: a reflink (FICLONE) where the host
    filesystem shares extents, else `cp --sparse=always` (holes stay holes); neither copy leaves
    its pages in the host's page cache. Return how it was copied ("reflink" or "sparse")."""
    how = "reflink"
    with open(source, "rb") as src:
        try:
            fcntl.ioctl(target, _FICLONE, src.fileno())
        except OSError:
            how = "sparse"
        if how == "sparse":
            _run(["cp", "--sparse=always", str(source), f"/proc/self/fd/{target}"], target)
        pagecache.drop_pages(src.fileno())
    pagecache.drop_pages(target)
    return how


class BackingStore:
    """A sparse file, formatted and loop-mounted under `workdir`; released by `close`.

    With `template` (a backing file a store of the same type and size left, harness/run/runner.py
    templates), the file is a copy of it instead of a new mkfs. `loop_io` is the run's `--loop-io`
    (harness/environment.py): "direct" (the store behaves like a disk) or "buffered" (the host page
    cache also holds its pages, as layerbench 0.1 ran; only to measure what direct I/O changes).
    Use as a context manager; `close` is idempotent and runs after errors too.
    """

    def __init__(
        self,
        workdir: Path,
        fstype: str,
        size_bytes: int,
        inodes: int = 0,
        ledger: Ledger | None = None,
        template: Path | None = None,
        *,
        loop_io: str = "direct",
    ) -> None:
        if fstype not in BACKINGS:
            raise UserError(f"unknown backing filesystem {fstype!r}; allowed: {', '.join(BACKINGS)}")
        if loop_io not in LOOP_IO:
            raise UserError(f"--loop-io {loop_io!r}: allowed: {', '.join(LOOP_IO)}")
        self.loop_io = loop_io
        self.fstype = fstype
        self.size_bytes = max(size_bytes, MIN_SIZE.get(fstype, 0))
        self.inodes = inodes  # ext4 fixes its inode count at mkfs; 0 keeps mkfs's default
        self.image = workdir / f"backing.{fstype}.img"
        self.mountpoint = workdir / "mnt"
        self.loop: str | None = None
        self.direct_io: bool | None = None  # the loop's direct-I/O state; None without a loop ("dir")
        self.mounted = False
        self.ledger = ledger
        self.template = template
        self.workdir = workdir
        self._made_image = self._made_mountpoint = False  # what `close` may remove: only what `open` made

    def _note(self, kind: str, path: Path | str, made: bool = True) -> None:
        if self.ledger is not None:
            (self.ledger.made if made else self.ledger.released)(kind, path)

    def open(self) -> Path:
        """Make the store. `workdir` must be the running user's alone and reached without a symlink
        (kernel/safety.open_dir); everything in it is made through its fd: the mount point
        without following a symlink, the backing file new (`O_EXCL|O_NOFOLLOW`), and mkfs,
        losetup given that very file (/proc/self/fd/N), never its path; the mount point is checked
        to be the real directory `workdir/mnt` before mounting on it."""
        if not os.path.lexists(self.workdir):
            safety.make_dir(self.workdir)
        wfd = safety.open_dir(self.workdir)
        try:
            self._note("dir", self.mountpoint)
            try:
                os.mkdir(self.mountpoint.name, 0o700, dir_fd=wfd)
            except FileExistsError:
                pass
            mfd = os.open(self.mountpoint.name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=wfd)
            self._made_mountpoint = True
            try:
                if (got := os.readlink(f"/proc/self/fd/{mfd}")) != str(self.mountpoint):
                    raise UserError(
                        f"{self.mountpoint}: reached through a symlink (it is {got}); refusing to mount on it"
                    )
                # mount(2) by the path just checked: a bind mount onto a /proc/self/fd/N target would
                # be hardened (remounted) on the mount below it; no one else may write in `workdir`
                self._open_in(wfd, str(self.mountpoint))
            finally:
                os.close(mfd)
        finally:
            os.close(wfd)
        return self.mountpoint

    def _open_in(self, wfd: int, target: str) -> None:
        """Make the store in the directory `wfd`, mounted on `target` (its checked mount point)."""
        if self.fstype == "dir":
            if os.geteuid() == 0:  # bound onto itself, so it is nodev,nosuid like every other store
                self._note("mount", self.mountpoint)
                syscalls.mount(target, target, "", syscalls.MS_BIND)
                self.mounted = True
            return
        self._note("file", self.image)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            ifd = os.open(self.image.name, flags, 0o600, dir_fd=wfd)
        except FileExistsError:
            raise UserError(f"{self.image}: already there; a store's backing file is always new") from None
        self._made_image = True
        try:
            if self.template is not None:
                copy_backing_file(self.template, ifd)
            else:
                os.ftruncate(ifd, self.size_bytes)
                extra = ["-N", str(self.inodes)] if self.fstype == "ext4" and self.inodes else []
                _run([*MKFS[self.fstype], *MKFS_OPTIONS[self.fstype], *extra, f"/proc/self/fd/{ifd}"], ifd)
            self._note("loop", self.image)
            self.loop = _run(["losetup", "--find", "--show", f"/proc/self/fd/{ifd}"], ifd)
        finally:
            os.close(ifd)
        # Direct I/O: reads and writes go to the image file without the host's page cache, so
        # it holds no second copy of the store's pages and a cold read is cold, as on a disk.
        # Where the host filesystem refuses O_DIRECT, the loop stays buffered (direct_io False).
        if self.loop_io == "direct":
            subprocess.run(["losetup", "--direct-io=on", self.loop], capture_output=True)
        self.direct_io = loop_direct_io(self.loop)
        self._note("mount", self.mountpoint)
        syscalls.mount(self.loop, target, self.fstype, 0, "")
        self.mounted = True

    def close(self, keep_file: bool = False) -> None:
        """Unmount (everything below first, lazily as the last resort), detach, remove (the
        backing file too, unless `keep_file`: a template's, which its owner removes)."""
        if self.mounted:
            syscalls.unmount_below(str(self.mountpoint), include_root=True)
            self.mounted = False
            self._note("mount", self.mountpoint, made=False)
        if self.loop is not None:
            if not loopdev.detach(self.loop):  # the ledger keeps the loop and its file: `cleanup` detaches it
                raise OSError(f"{self.loop} ({self.image}): losetup -d failed; `layerbench cleanup` detaches it")
            self.loop = None
            self._note("loop", self.image, made=False)
        if self._made_image and not keep_file:  # only the file this store made, never one found there
            self.image.unlink(missing_ok=True)
            self._made_image = False
            self._note("file", self.image, made=False)
        if self._made_mountpoint and self.mountpoint.is_dir() and not os.path.ismount(self.mountpoint):
            remove_tree(self.mountpoint)
            self._note("dir", self.mountpoint, made=False)

    def usage(self) -> Usage:
        """Used bytes and inodes: the filesystem's own statvfs, or a walk for "dir"."""
        if self.fstype != "dir":
            return usage(self.mountpoint)
        return Usage(bytes=allocated_bytes(self.mountpoint), inodes=_count_inodes(self.mountpoint))

    def __enter__(self) -> Path:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
