"""fuse-overlayfs: overlay2's on-disk layout, merged in user space by the fuse-overlayfs daemon.

The rootless overlay Docker and Podman use where kernel overlay is not allowed.
Layers, links and `lower` files are exactly overlay2's (see :mod:`.overlay2`);
whiteouts are 0/0 character devices and opaque dirs carry
``trusted.overlay.opaque`` as with kernel overlay, so committed layers are
interchangeable. The mount itself needs a process: ``mount`` runs the
``fuse-overlayfs`` binary, which returns once the FUSE daemon serves the merged
directory (``nodev,nosuid``), so its startup cost includes starting that daemon.
``unmount`` is umount2(2); the daemon exits when its mount goes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from layerbench.kernel import syscalls

from ._common import remove_tree, unmount_below
from ._overlay import overlay_data
from .overlay2 import Overlay2Driver

__all__ = ["FuseOverlayfsDriver"]

#: as every mount layerbench makes (harness/kernel/syscalls.py): an image's device nodes and setuid bits are inert
_SAFE_OPTIONS = (("nodev", None), ("nosuid", None))


class FuseOverlayfsDriver(Overlay2Driver):
    """overlay2's layout mounted through the fuse-overlayfs FUSE daemon."""

    name = "fuse-overlayfs"
    backings = ("ext4", "xfs", "btrfs", "dir")
    in_default_run = False  # run it with -d fuse-overlayfs or -d all
    adopts_store = False  # overlay2's layout would allow it; a copied store is not tested with the daemon

    @classmethod
    def probe(cls) -> str | None:
        if shutil.which("fuse-overlayfs") is None:
            return "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"
        if not os.path.exists("/dev/fuse"):
            return "there is no /dev/fuse (modprobe fuse)"
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            return "/dev/fuse is not readable and writable by this user"
        if os.geteuid() != 0 and shutil.which("fusermount3") is None:
            return "fusermount3 is not installed (apt-get install fuse3)"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        proc = subprocess.run(["fuse-overlayfs", "--version"], capture_output=True, text=True)
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        return {"fuse-overlayfs": lines[0] if lines else "?"}

    def setup(self) -> None:
        super().setup()
        self._exe = shutil.which("fuse-overlayfs") or "fuse-overlayfs"

    def mount(self, container_id: str) -> Path:
        spec = self.overlay_of(container_id)  # overlay2's directories, absolute (fuse-overlayfs has no page limit)
        target = spec.merged
        os.mkdir(target)
        options = overlay_data(spec.lowers, spec.upper, spec.work, _SAFE_OPTIONS)
        proc = subprocess.run([self._exe, "-o", options, target], capture_output=True, text=True)
        if proc.returncode != 0:
            os.rmdir(target)
            raise OSError(f"fuse-overlayfs mount of {container_id} failed: {proc.stderr.strip()}")
        return Path(target)

    def unmount(self, container_id: str) -> None:
        merged = self.home / container_id / "merged"
        if os.geteuid() == 0:
            syscalls.umount(str(merged))
        else:
            subprocess.run(["fusermount3", "-u", str(merged)], check=True, capture_output=True)
        merged.rmdir()

    def close(self) -> None:
        unmount_below(self.home)
        # A daemon whose mount went away exits on its own; give it a moment to let go of
        # the upper directory before it is removed.
        deadline = time.monotonic() + 2
        while _daemons_under(self.home) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.home.exists():
            for child in self.home.iterdir():
                remove_tree(child)


def _daemons_under(home: Path) -> list[int]:
    """Pids of fuse-overlayfs processes whose command line names a path under `home`."""
    prefix = str(home).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        daemon = cmd.startswith(b"fuse-overlayfs") or b"/fuse-overlayfs\0" in cmd.split(b"\0", 1)[0] + b"\0"
        if daemon and prefix in cmd:
            pids.append(int(entry))
    return pids
