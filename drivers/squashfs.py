"""squashfs: each sealed layer a compressed squashfs image on a loop device, under an overlay upper.

How read-only image formats are run with a writable layer (Apptainer's images, a
squashfs per layer): containerd's snapshot layout (see drivers/_image_layers.py),
with

- a layer filled as a diff directory (`snapshots/<n>/fs`), sealed by
  `mksquashfs snapshots/<n>/fs snapshots/<n>/layer.squashfs -noappend -comp <c>`
  (xattrs kept: `trusted.overlay.opaque`; whiteouts are 0/0 devices), the directory
  then emptied, and the image attached to a loop device (read-only, autoclear, direct
  I/O as every store's loop, so the host holds no cached copy of the image file beside
  the mount's own pages; squashfs mounts only a block device) and mounted `ro` on
  `snapshots/<n>/lower` for as long
  as the layer lives: one loop device per layer, shared by every container on it;
- `commit`: `mksquashfs` of the container's upper directory into the new layer;
- a container: the overlay
  `lowerdir=<the layers' lower mounts>,upperdir=snapshots/<cid>/fs,workdir=...,index=off`.

Compression: zstd where mksquashfs has it, else gzip, at mksquashfs's default level
(zstd: 15, slow to build); `LAYERBENCH_SQUASHFS_COMPRESSION=NAME[:LEVEL]` picks
another of mksquashfs's compressors (gzip, xz, lz4, lzo, zstd), and a level for gzip
(1-9) or zstd (1-22). squashfs keeps whole-second mtimes only, and stores a file
identical to one already in the image once.

Timed: mksquashfs, the loop attach and the mount in the layer build and in
`commit_ns`; the overlay mount in `startup_ns`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess

from ._image_layers import ImageLayersDriver, loop_dio, mount_via_loop, run_tool

__all__ = ["SquashfsDriver"]

COMPRESSION_ENV = "LAYERBENCH_SQUASHFS_COMPRESSION"


@functools.cache
def _mksquashfs_help() -> str:
    proc = subprocess.run(["mksquashfs", "-help"], capture_output=True, text=True)
    return proc.stdout + proc.stderr


def compressors() -> list[str]:
    """The compressors this mksquashfs was built with."""
    lines = _mksquashfs_help().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Compressors available:"), len(lines))
    names = []
    for line in lines[start + 1 :]:
        if not (m := re.fullmatch(r"\t+(\w+)( \(default\))?", line)):
            break
        names.append(m.group(1))
    return names


_LEVELS = {"gzip": range(1, 10), "zstd": range(1, 23)}


def compression() -> str:
    """The compressor to use, `NAME[:LEVEL]`: the environment's choice, else zstd where available, else gzip."""
    if chosen := os.environ.get(COMPRESSION_ENV):
        return chosen
    return "zstd" if "zstd" in compressors() else "gzip"


def compression_problem(choice: str) -> str | None:
    """None when mksquashfs can compress with `choice` (`NAME[:LEVEL]`), else why not."""
    name, _, level = choice.partition(":")
    if name not in (have := compressors()):
        return f"{COMPRESSION_ENV}={choice}: this mksquashfs has no compressor {name!r} (it has {', '.join(have)})"
    if level and not (level.isdigit() and int(level) in _LEVELS.get(name, ())):
        allowed = ", ".join(f"{k} {r.start}-{r.stop - 1}" for k, r in _LEVELS.items())
        return f"{COMPRESSION_ENV}={choice}: {level!r} is not a level for {name} (levels: {allowed})"
    return None


def compression_args(choice: str) -> list[str]:
    """mksquashfs's arguments for `NAME[:LEVEL]`."""
    name, _, level = choice.partition(":")
    return ["-comp", name] + (["-Xcompression-level", level] if level else [])


class SquashfsDriver(ImageLayersDriver):
    """Layers as squashfs images on loop devices, below an overlay upper."""

    name = "squashfs"
    image_name = "layer.squashfs"
    mount_per_container = False
    image_fs = "squashfs"
    image_tool = ("mksquashfs", "squashfs-tools")

    @classmethod
    def probe(cls) -> str | None:
        if reason := super().probe():
            return reason
        if not os.path.exists("/dev/loop-control"):
            return "there is no /dev/loop-control (modprobe loop): squashfs mounts only a block device"
        return compression_problem(compression())

    @classmethod
    def versions(cls) -> dict[str, str]:
        first = _mksquashfs_help().strip().splitlines()
        proc = subprocess.run(["mksquashfs", "-version"], capture_output=True, text=True)
        version = (proc.stdout.strip().splitlines() or first or ["?"])[0]
        return {"mksquashfs": version, "compression": compression()}

    def setup(self) -> None:
        super().setup()
        self.compression = compression()
        self.setup_loops()

    def build_image(self, src: str, image: str) -> None:
        run_tool(["mksquashfs", src, image, "-noappend", "-quiet", "-no-progress", *compression_args(self.compression)])

    def setup_loops(self) -> None:
        #: each layer image's loop device and whether it does direct I/O (the kernel's answer)
        self.loops: dict[str, tuple[str, bool]] = {}

    def mount_image(self, image: str, target: str) -> None:
        # direct I/O, as every store's loop: else the host caches the image file's compressed pages beside the
        # squashfs pages of the mount, and the first container cached its image twice (193 MiB for 97.5 MiB)
        device = mount_via_loop(image, target, "squashfs", direct_io=True)
        self.loops[image] = (device, loop_dio(device))
