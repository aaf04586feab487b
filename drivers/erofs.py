"""erofs: containerd's EROFS snapshotter model, each sealed layer an EROFS image under an overlay upper.

containerd's layout and mounts (plugins/snapshots/erofs, docs/snapshotters/erofs.md);
see drivers/_image_layers.py for the directories:

- a layer is filled as a diff directory (`snapshots/<n>/fs`), then sealed:
  `mkfs.erofs --quiet -Enoinline_data snapshots/<n>/layer.erofs snapshots/<n>/fs`
  (what containerd runs for a directory, internal/erofsutils; erofs-utils 1.5 has no
  `--tar` or `-b`, so images are built from the directory as containerd does with
  the walking differ), and the directory is emptied;
- `commit` converts the container's upper directory into the new layer's
  `layer.erofs` the same way (containerd's Commit of an active snapshot);
- a container's mount, as containerd's mount manager does it: each parent's
  `layer.erofs` mounted read-only (`ro`, type erofs) as a file on
  `mounts/<cid>/<n>` — file-backed, no loop device (Linux >= 6.12); only where the
  kernel refuses a file (ENOTBLK, EINVAL) through a loop device (autoclear), noted
  in `mounted_images` — then the overlay
  `lowerdir=<those mounts>,upperdir=snapshots/<cid>/fs,workdir=snapshots/<cid>/work,index=off`
  (past a page, from `mounts/<cid>` with relative `<n>` names, then fsconfig).

The build path, probed once: containerd's EROFS differ pipes each layer's tar into
`mkfs.erofs --tar=f` (erofs-utils >= 1.7) and never writes the files out. Where this
mkfs.erofs has `--tar`, a layer is packed as its OCI tar (images/layer_pack.py) and
piped in the same way; erofs-utils 1.5 (Debian 12) has none, so the image is built from
the layer's directory (the slower fallback). Each cell says which in its image's
`inspect` (`BuildPath`: `tar` or `directory`), and the run's helpers name it
(`mkfs.erofs --tar`).

Timed: the conversion in the layer build and in `commit_ns`; the EROFS mounts of
every layer and the overlay mount in `startup_ns`.

containerd 2.2+ mounts each layer per container, a new superblock each, without the
kernel's `directio` option (REFERENCES.md): a file-backed EROFS mount then reads its
image through the host page cache, so a container's reads cache the image file once on
the host and once in the mount. `erofs` does what containerd does; `erofs-directio` is
the same driver with `directio` on each EROFS mount (drivers/erofs_directio.py), so the
figure can be compared: the image file's pages leave the host cache, each mount keeps its own.
"""

from __future__ import annotations

import errno
import functools
import subprocess
from pathlib import Path

from layerbench.images.layer_pack import pack_layer
from layerbench.kernel import syscalls

from ._image_layers import ImageLayersDriver, mount_via_loop, run_tool

__all__ = ["ErofsDriver", "tar_mode"]


class ErofsDriver(ImageLayersDriver):
    """Layers as EROFS images (mkfs.erofs), mounted as files below an overlay upper."""

    name = "erofs"
    image_name = "layer.erofs"
    mount_per_container = True
    image_fs = "erofs"
    image_tool = ("mkfs.erofs", "erofs-utils")

    @classmethod
    def versions(cls) -> dict[str, str]:
        tar = "yes: layers piped in as tars" if tar_mode() else "no: built from the unpacked directory"
        return {"mkfs.erofs": _mkfs_version(), "mkfs.erofs --tar": tar}

    def setup(self) -> None:
        super().setup()
        #: how each image was mounted the last time: "file" or the loop device
        self.mounted_images: dict[str, str] = {}

    def build_image(self, src: str, image: str) -> None:
        if not tar_mode():
            run_tool(["mkfs.erofs", "--quiet", "-Enoinline_data", image, src])
            return
        argv = ["mkfs.erofs", "--quiet", "-Enoinline_data", "--tar=f", image]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            pack_layer(Path(src), proc.stdin, self.opaque_xattr)
        finally:
            proc.stdin.close()
            err = proc.stderr.read() if proc.stderr is not None else b""
            proc.wait()
        if proc.returncode != 0:
            raise OSError(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")

    def inspect(self, item_id: str) -> dict[str, str]:
        return {**super().inspect(item_id), "BuildPath": "tar" if tar_mode() else "directory"}

    #: mount options of each EROFS mount ("": containerd's, no `directio`)
    mount_data = ""

    def mount_image(self, image: str, target: str) -> None:
        try:
            syscalls.mount(image, target, "erofs", syscalls.MS_RDONLY, self.mount_data)
            self.mounted_images[image] = "file"
        except OSError as exc:
            if exc.errno not in (errno.ENOTBLK, errno.EINVAL):
                raise
            self.mounted_images[image] = mount_via_loop(image, target, "erofs")


@functools.cache
def tar_mode() -> bool:
    """Whether this mkfs.erofs builds an image from a tar on its input (`--tar`, erofs-utils >= 1.7)."""
    proc = subprocess.run(["mkfs.erofs", "--help"], capture_output=True, text=True)
    return "--tar" in proc.stdout + proc.stderr


@functools.cache
def _mkfs_version() -> str:
    proc = subprocess.run(["mkfs.erofs", "--version"], capture_output=True, text=True)
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else "?"
