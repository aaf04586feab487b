"""overlay2-rootless: kernel overlayfs mounted by an unprivileged user in its own user namespace.

What rootless Docker and Podman do where the kernel allows it (Linux >= 5.11): the
store belongs to an ordinary user (uid 100000 here), who unshares a user and a
mount namespace, is root only inside them, and mounts overlay with `userxattr`.
overlay2's layout (see :mod:`.overlay2`); the differences:

- every cell runs in that namespace (`userns = True`): the runner hands the
  store to the user and builds the image and takes the samples in a forked child
  (:mod:`layerbench.run.userns`); mounts are invisible to the host and go with
  the child;
- the mount adds `userxattr`: overlay keeps its metadata in `user.overlay.*`
  (`trusted.*` cannot be set there), so an opaque directory in a DIFF layer is
  `user.overlay.opaque=y`; a whiteout stays a 0/0 character device, which the
  kernel lets an unprivileged user make (Linux >= 5.8 exempts it from CAP_MKNOD);
- `userxattr` implies no `redirect_dir` and no `metacopy`: renaming a lower
  directory gives EXDEV, a chmod copies the whole file up, as with overlay2 here.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

from layerbench.kernel import syscalls
from layerbench.run import userns

from ._common import fs_in_kernel
from ._overlay import mount_overlay
from .overlay2 import Overlay2Driver

__all__ = ["Overlay2RootlessDriver"]


class Overlay2RootlessDriver(Overlay2Driver):
    """overlay2's layout, mounted with `userxattr` inside an unprivileged user namespace."""

    name = "overlay2-rootless"
    backings = ("ext4", "xfs", "btrfs", "dir")
    userns = True
    opaque_xattr = "user.overlay.opaque"
    in_default_run = False  # overlay2 stands for kernel overlay in the default run
    adopts_store = False  # its cells run in a user namespace, each on a store handed to the user
    mount_options = (("index", "off"), ("userxattr", None))

    @classmethod
    def probe(cls) -> str | None:
        if not fs_in_kernel("overlay"):
            return "the kernel has no overlay filesystem (modprobe overlay)"
        if reason := userns.unavailable():
            return reason
        return _trial_mount()

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {**super().versions(), "userns_map": f"0 {userns.USERNS_ID} {userns.USERNS_COUNT}"}

    def setup(self) -> None:
        if userns.in_initial_userns():
            raise RuntimeError(
                f"{self.name} runs only inside a user namespace: through the runner, the "
                f"layerbench_driver fixture or layerbench.run.userns.run_in_userns"
            )
        super().setup()


def _trial(root: str) -> None:
    """Mount overlay with userxattr on `root`, copy a file up, unmount (runs in the namespace)."""
    for d in ("lower", "upper", "work", "merged"):
        os.mkdir(f"{root}/{d}")
    with open(f"{root}/lower/f", "w") as f:
        f.write("lower")
    merged = f"{root}/merged"
    options = Overlay2RootlessDriver.mount_options  # the driver's own: index=off, userxattr
    mount_overlay(merged, [f"{root}/lower"], f"{root}/upper", f"{root}/work", options, fsconfig=False)
    try:
        with open(f"{merged}/f", "a") as f:
            f.write("+")
    finally:
        syscalls.umount(merged)
    if not os.path.exists(f"{root}/upper/f"):
        raise OSError("no copy-up in the upper directory")


@functools.cache
def _trial_mount() -> str | None:
    """None when an overlay userxattr mount works in an unprivileged user namespace here (tried once)."""
    root = tempfile.mkdtemp(prefix="layerbench-userns-probe-")
    try:
        userns.hand_over(Path(root))
        userns.run_in_userns(_trial, root, expose=[Path(root)], timeout_s=30)
        return None
    except Exception as exc:  # noqa: BLE001  the reason is the answer
        return f"an overlay mount with userxattr fails in an unprivileged user namespace ({exc})"
    finally:
        shutil.rmtree(root, ignore_errors=True)
