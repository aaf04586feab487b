"""Layers kept as read-only filesystem images (EROFS, squashfs) under an overlay upper, in containerd's layout.

    <home>/snapshots/<n>/fs           a layer's diff while it is filled (emptied once converted);
                                      a container's upperdir
    <home>/snapshots/<n>/work         a container's overlay workdir
    <home>/snapshots/<n>/<image>      a sealed layer: its image (`layer.erofs`, `layer.squashfs`)
    <home>/snapshots/<n>/lower        the image mounted for as long as the layer lives (`mount_per_container` off)
    <home>/mounts/<cid>/<n>           the image mounted for container <cid> while it is mounted (`mount_per_container`)

`seal_layer` converts the layer's diff directory (whiteouts are 0/0 character
devices, opaque directories carry `trusted.overlay.opaque`: both are kept by the
image) into its image and empties the directory; `commit` converts the container's
upper directory into the new layer's image. The conversion is inside the timed
layer build and `commit_ns`.

Loop devices (squashfs is block-only; EROFS where a file-backed mount fails) are
attached by ioctl with autoclear and read-only: the kernel detaches one when its
mount goes (by `unmount`, `close`, or the ledger's release of the store's mount
after a crash), and when the mount fails; `close` detaches any left whose backing
file is under `home`.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import ClassVar

from layerbench.kernel import syscalls

from ._common import fs_in_kernel, remove_tree
from .containerd_overlayfs import ContainerdOverlayfsDriver

__all__ = ["ImageLayersDriver", "mount_via_loop", "loop_dio", "detach_loops_under", "run_tool"]

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LOOP_CLR_FD = 0x4C01
_LO_FLAGS_READ_ONLY, _LO_FLAGS_AUTOCLEAR, _LO_FLAGS_DIRECT_IO = 1, 4, 16


def _loop_config(backing_fd: int, name: str, direct_io: bool = False) -> bytes:
    """struct loop_config: fd, block_size, loop_info64 (lo_flags at 52, lo_file_name at 56), reserved."""
    info = bytearray(232)
    flags = _LO_FLAGS_READ_ONLY | _LO_FLAGS_AUTOCLEAR | (_LO_FLAGS_DIRECT_IO if direct_io else 0)
    struct.pack_into("=I", info, 52, flags)
    raw = os.fsencode(name)[:63]
    info[56 : 56 + len(raw)] = raw
    return struct.pack("=II", backing_fd, 0) + bytes(info) + bytes(64)


def loop_dio(device: str) -> bool:
    """Does the loop device do direct I/O to its file (the kernel's own answer, /sys/block/loopN/loop/dio)?"""
    try:
        with open(f"/sys/block/{os.path.basename(device)}/loop/dio") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def mount_via_loop(image: str, target: str, fstype: str, direct_io: bool = False) -> str:
    """Mount `image` read-only on `target` through a free loop device (autoclear); return the device.

    With `direct_io` the device reads its file with direct I/O (LO_FLAGS_DIRECT_IO), so the host page cache
    holds no copy of the image file beside the mounted filesystem's own; where the file's filesystem cannot,
    the kernel leaves the device buffered (`loop_dio` says which)."""
    backing = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for _ in range(32):  # another process may take the free device first (EBUSY): ask again
            ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(ctl, _LOOP_CTL_GET_FREE)
            finally:
                os.close(ctl)
            device = f"/dev/loop{number}"
            loop = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
            try:
                try:
                    fcntl.ioctl(loop, _LOOP_CONFIGURE, _loop_config(backing, image, direct_io))
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        continue
                    raise
                syscalls.mount(device, target, fstype, syscalls.MS_RDONLY)
                return device
            finally:
                os.close(loop)  # the mount holds the device now; without one, autoclear detaches it
        raise OSError(errno.EBUSY, f"no free loop device for {image}")
    finally:
        os.close(backing)


def detach_loops_under(root: Path) -> list[str]:
    """Detach every loop device whose backing file is under `root`; return them."""
    prefix, done = str(root).rstrip("/") + "/", list[str]()
    try:
        names = os.listdir("/sys/block")
    except FileNotFoundError:
        return done
    for name in names:
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.startswith(prefix):
            fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, _LOOP_CLR_FD)
                done.append(f"/dev/{name}")
            except OSError:
                pass  # already going (autoclear)
            finally:
                os.close(fd)
    return done


def run_tool(argv: list[str]) -> None:
    """Run an image builder; OSError with its stderr if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")


class ImageLayersDriver(ContainerdOverlayfsDriver):
    """containerd's snapshot layout, each sealed layer a read-only image mounted below the overlay."""

    #: the image's file name in the snapshot dir
    image_name: ClassVar[str]
    #: mount a container's layer images when it is mounted (containerd's EROFS), else once per layer
    mount_per_container: ClassVar[bool]
    #: the kernel filesystem of the images, and the tool that builds them with its Debian package
    image_fs: ClassVar[str]
    image_tool: ClassVar[tuple[str, str]]

    @classmethod
    def probe(cls) -> str | None:
        if reason := super().probe():
            return reason
        if not fs_in_kernel(cls.image_fs):
            return f"the kernel has no {cls.image_fs} filesystem in /proc/filesystems (modprobe {cls.image_fs})"
        tool, package = cls.image_tool
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
        return None

    @abc.abstractmethod
    def build_image(self, src: str, image: str) -> None:
        """Convert directory `src` into the image file `image`."""

    @abc.abstractmethod
    def mount_image(self, image: str, target: str) -> None:
        """Mount `image` read-only on the directory `target`."""

    def setup(self) -> None:
        super().setup()
        os.mkdir(self.home / "mounts", 0o700)

    def _image(self, n: int) -> str:
        return f"{self.home}/snapshots/{n}/{self.image_name}"

    def lower_dirs(self, item_id: str) -> list[str]:
        if self.mount_per_container:
            return [f"{self.home}/mounts/{item_id}/{n}" for n in self.parents(item_id)]
        return [f"{self.home}/snapshots/{n}/lower" for n in self.parents(item_id)]

    def _seal(self, layer_id: str, src: str) -> None:
        n = self._ids[layer_id]
        self.build_image(src, self._image(n))
        if not self.mount_per_container:
            os.mkdir(f"{self.home}/snapshots/{n}/lower")
            self.mount_image(self._image(n), f"{self.home}/snapshots/{n}/lower")

    def seal_layer(self, layer_id: str) -> None:
        fs = f"{self.snapshot_dir(layer_id)}/fs"
        self._seal(layer_id, fs)
        remove_tree(Path(fs))  # the image holds the layer now: containerd empties the directory
        os.mkdir(fs, 0o755)

    def commit(self, container_id: str, layer_id: str) -> None:
        self._new_snapshot(layer_id, self.lineage.parent.get(container_id), active=False)
        self._seal(layer_id, f"{self.snapshot_dir(container_id)}/fs")

    def mount(self, container_id: str) -> Path:
        if not self.mount_per_container:
            return super().mount(container_id)
        mounts = f"{self.home}/mounts/{container_id}"
        os.mkdir(mounts)
        try:
            for n, target in zip(self.parents(container_id), self.lower_dirs(container_id), strict=True):
                os.mkdir(target)
                self.mount_image(self._image(n), target)
            return super().mount(container_id)
        except BaseException:
            self._release_mounts(container_id)
            raise

    def _release_mounts(self, container_id: str) -> None:
        mounts = Path(self.home, "mounts", container_id)
        syscalls.unmount_below(str(mounts))
        remove_tree(mounts)

    def unmount(self, container_id: str) -> None:
        super().unmount(container_id)
        if self.mount_per_container:
            self._release_mounts(container_id)

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        lower = f"{self.snapshot_dir(item_id)}/lower" if item_id in self._ids else ""
        if os.path.ismount(lower):
            syscalls.umount(lower)
        super().remove(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        data = super().inspect(item_id)
        if images := [self._image(n) for n in self.parents(item_id)]:
            data["LowerImages"] = ":".join(images)
        if os.path.exists(own := self._image(self._ids[item_id])):
            data["Image"] = own
        return data

    def close(self) -> None:
        super().close()
        detach_loops_under(self.home)
