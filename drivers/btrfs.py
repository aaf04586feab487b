"""btrfs: one subvolume per layer; child layers and containers are snapshots of their parent.

Docker's layout (`<home>/subvolumes/<id>`). Subvolumes are made and destroyed
with the btrfs ioctls directly, so no process is spawned while timing. Commit is a
snapshot of the container's subvolume, as containerd's btrfs snapshotter does.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

from layerbench.driver import Driver, LayerFormat, Style

from ._common import fs_in_kernel, needs_root, remove_tree

BTRFS_IOC_SUBVOL_CREATE = 0x5000940E
BTRFS_IOC_SNAP_DESTROY = 0x5000940F
BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417
BTRFS_IOC_SYNC = 0x9408
BTRFS_IOC_TREE_SEARCH = 0xD0009411  # _IOWR(0x94, 17, struct btrfs_ioctl_search_args), 4096 bytes
_ROOT_TREE = 1
_ORPHAN_OBJECTID = 2**64 - 5  # BTRFS_ORPHAN_OBJECTID: a deleted subvolume not yet cleaned has one
_ORPHAN_ITEM_KEY = 48
_U64_MAX = 2**64 - 1
_SETTLE_POLL_S = 0.005
_SETTLE_LIMIT_S = 120.0
_VOL_ARGS_SIZE = 4096  # struct btrfs_ioctl_vol_args: int64 fd; char name[4088]
_V2_NAME_OFFSET = 56  # struct btrfs_ioctl_vol_args_v2: fd, transid, flags, union[32], name


def _vol_args(name: str) -> bytearray:
    buf = bytearray(_VOL_ARGS_SIZE)  # fcntl.ioctl refuses immutable arguments over 1024 bytes
    encoded = name.encode()
    buf[8 : 8 + len(encoded)] = encoded
    return buf


def _cleaner_pending(dirfd: int) -> bool:
    """Whether a deleted subvolume still waits for btrfs's cleaner: an orphan item of the root
    tree names it until the cleaner has dropped it (what `btrfs subvolume sync` looks for)."""
    buf = bytearray(4096)  # struct btrfs_ioctl_search_key, then the result buffer
    struct.pack_into(
        "=7Q4I",
        buf,
        0,
        _ROOT_TREE,
        _ORPHAN_OBJECTID,
        _ORPHAN_OBJECTID,
        0,
        _U64_MAX,
        0,
        _U64_MAX,
        _ORPHAN_ITEM_KEY,
        _ORPHAN_ITEM_KEY,
        1,  # nr_items: one is enough to know
        0,
    )
    fcntl.ioctl(dirfd, BTRFS_IOC_TREE_SEARCH, buf)
    return struct.unpack_from("=I", buf, 7 * 8 + 2 * 4)[0] > 0


def _snap_args(source_fd: int, name: str) -> bytearray:
    buf = bytearray(_VOL_ARGS_SIZE)
    struct.pack_into("=qQQ", buf, 0, source_fd, 0, 0)
    encoded = name.encode()
    buf[_V2_NAME_OFFSET : _V2_NAME_OFFSET + len(encoded)] = encoded
    return buf


class BtrfsDriver(Driver):
    name = "btrfs"
    style = Style.SNAPSHOT
    layer_format = LayerFormat.FULL
    backings = ("btrfs",)
    in_default_run = True
    adopts_store = True  # the subvolumes are the whole state; `let_go` closes the directory held open

    @classmethod
    def probe(cls) -> str | None:
        if reason := needs_root():
            return reason
        if not fs_in_kernel("btrfs"):
            return "the kernel has no btrfs filesystem (modprobe btrfs)"
        if shutil.which("mkfs.btrfs") is None or shutil.which("btrfs") is None:
            return "btrfs-progs is not installed (apt-get install btrfs-progs)"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        proc = subprocess.run(["mkfs.btrfs", "--version"], capture_output=True, text=True)
        return {"mkfs.btrfs": proc.stdout.strip() or proc.stderr.strip()}

    def setup(self) -> None:
        self.subvolumes = self.home / "subvolumes"
        self.subvolumes.mkdir(exist_ok=True)
        self._dirfd = os.open(self.subvolumes, os.O_RDONLY | os.O_DIRECTORY)

    def _snapshot(self, source: str, name: str) -> Path:
        src = os.open(self.subvolumes / source, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(self._dirfd, BTRFS_IOC_SNAP_CREATE_V2, _snap_args(src, name))
        finally:
            os.close(src)
        return self.subvolumes / name

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.check_new(layer_id)
        if parent is not None:
            path = self._snapshot(parent, layer_id)
            self.lineage.add(layer_id, parent)
            return path
        self.lineage.add(layer_id, None)
        fcntl.ioctl(self._dirfd, BTRFS_IOC_SUBVOL_CREATE, _vol_args(layer_id))
        path = self.subvolumes / layer_id
        os.chmod(path, 0o755)
        return path

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self._snapshot(image, container_id)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        return self.subvolumes / container_id  # the subvolume is already a mounted tree

    def unmount(self, container_id: str) -> None:
        pass

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
        self._snapshot(container_id, layer_id)
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        self._destroy(item_id)
        self.lineage.forget(item_id)

    def _destroy(self, item_id: str) -> None:
        if (self.subvolumes / item_id).exists():
            fcntl.ioctl(self._dirfd, BTRFS_IOC_SNAP_DESTROY, _vol_args(item_id))

    def inspect(self, item_id: str) -> dict[str, str]:
        return {"Subvolume": str(self.subvolumes / item_id)}

    def settle(self) -> None:
        # A destroyed subvolume is freed by btrfs's cleaner thread later; wait for it so
        # the next sample's disk usage does not carry the last one's garbage.
        # BTRFS_IOC_SYNC commits and wakes the cleaner (syncfs alone leaves it asleep until
        # the 30 s commit timer); then poll the root tree's orphan items every 5 ms, as
        # `btrfs subvolume sync` does every second.
        fcntl.ioctl(self._dirfd, BTRFS_IOC_SYNC)
        started = woken = time.monotonic()
        while _cleaner_pending(self._dirfd):
            now = time.monotonic()
            if now - started > _SETTLE_LIMIT_S:
                raise TimeoutError(f"btrfs's cleaner did not free the deleted subvolumes in {_SETTLE_LIMIT_S:g} s")
            if now - woken > 1.0:  # the cleaner went back to sleep with work left: wake it again
                fcntl.ioctl(self._dirfd, BTRFS_IOC_SYNC)
                woken = now
            time.sleep(_SETTLE_POLL_S)
        fcntl.ioctl(self._dirfd, BTRFS_IOC_SYNC)  # the cleaner's own changes, committed

    def let_go(self) -> None:
        if getattr(self, "_dirfd", None) is not None:
            os.close(self._dirfd)
            self._dirfd = None  # type: ignore[assignment]

    def close(self) -> None:
        if getattr(self, "_dirfd", None) is not None:
            for child in os.listdir(self.subvolumes):
                self._destroy(child)  # snapshots do not depend on each other
            os.close(self._dirfd)
            self._dirfd = None  # type: ignore[assignment]
        remove_tree(self.home / "subvolumes")
