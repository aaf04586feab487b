"""erofs-directio: the erofs driver with the kernel's `directio` on each file-backed EROFS mount, to compare.

containerd (2.2+) mounts each EROFS layer per container without `directio`, and `erofs`
does the same (drivers/erofs.py): a container's reads then cache the image file on the
host and the mount's own pages. With `directio` (Linux 6.13+) the mount reads its image
file with direct I/O, so only the mount's pages are cached. Not what any engine ships;
there so that the page-cache figure of `erofs` can be compared with it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile

from layerbench.kernel import syscalls

from .erofs import ErofsDriver

__all__ = ["ErofsDirectioDriver"]


class ErofsDirectioDriver(ErofsDriver):
    """erofs with `directio` on each EROFS mount."""

    name = "erofs-directio"
    mount_data = "directio"

    @classmethod
    def probe(cls) -> str | None:
        if reason := super().probe():
            return reason
        return _directio_unavailable()


@functools.cache
def _directio_unavailable() -> str | None:
    """None when this kernel mounts a file-backed EROFS image with `directio`, else why not (tried on a
    one-file image in a private temporary directory, unmounted and removed at once)."""
    with tempfile.TemporaryDirectory(prefix="layerbench-erofs-directio-probe-") as tmp:
        src, image, target = f"{tmp}/src", f"{tmp}/probe.erofs", f"{tmp}/mnt"
        os.mkdir(src)
        os.mkdir(target)
        with open(f"{src}/f", "w") as f:
            f.write("probe\n")
        proc = subprocess.run(["mkfs.erofs", "--quiet", image, src], capture_output=True, text=True)
        if proc.returncode != 0:
            return f"mkfs.erofs failed: {(proc.stderr or proc.stdout).strip()}"
        try:
            syscalls.mount(image, target, "erofs", syscalls.MS_RDONLY, "directio")
        except OSError as exc:
            return f"this kernel does not mount a file-backed EROFS image with directio ({exc.strerror}; Linux 6.13+)"
        syscalls.umount(target)
    return None
