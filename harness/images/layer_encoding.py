"""How a layer says "removed" and "replaced": the OCI whiteout and opaque-directory encoding.

In a layer tar, `.wh.<name>` removes `<name>` of the layers below and `.wh..wh..opq`
hides a directory's lower children. On a DIFF layer (overlayfs) they become a 0/0
character device and the driver's opaque xattr (`Driver.opaque_xattr`,
`trusted.overlay.opaque` by default; `user.overlay.opaque` for a rootless mount).
The one home of this encoding: layer import, synthetic images and the test trees use it.

It is also the one home of the xattr namespaces storage mechanisms read as their own
metadata (`MECHANISM_XATTRS`): a layer never sets one of them, on any driver (an image is
the same image on every driver), so no image steers a mechanism: hides lower files,
shows a mode or owner the file does not have, redirects a lookup, sets a property.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "WHITEOUT_PREFIX",
    "OPAQUE_MARKER",
    "OPAQUE_XATTR",
    "MECHANISM_XATTRS",
    "mechanism_xattr",
    "is_whiteout",
    "make_whiteout",
    "set_opaque",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

#: per mechanism, the xattr name prefixes it reads as its own metadata; an image's layer never sets them
MECHANISM_XATTRS: dict[str, tuple[str, ...]] = {
    # kernel overlayfs (overlay2, containerd-overlayfs, erofs, overlay2-rootless) and composefs's
    # overlay: opaque, redirect, metacopy, origin, upper, nlink, ... (trusted.* as root, user.* under
    # userxattr); fuse-overlayfs honours both too (its main.c: trusted.overlay.origin, the opaques)
    "overlayfs": ("trusted.overlay.", "user.overlay."),
    # fuse-overlayfs (1.10 main.c, utils.h; 1.16 and the Rust rewrite alike): its own opaque and
    # origin (a path it looks up in the lower layers, reporting that inode), override_stat
    # ("uid:gid:mode" shown instead of the file's own), and the user.containers.override_* encoding
    "fuse-overlayfs": ("user.fuseoverlayfs.", "security.fuseoverlayfs.", "user.containers."),
    # btrfs: properties set through xattrs (btrfs.compression)
    "btrfs": ("btrfs.",),
}


def mechanism_xattr(name: str) -> str | None:
    """The mechanism that reads the xattr `name` as its own metadata (`MECHANISM_XATTRS`), or None."""
    return next((m for m, prefixes in MECHANISM_XATTRS.items() if name.startswith(prefixes)), None)


def is_whiteout(st: os.stat_result) -> bool:
    """Whether `st` is an overlay whiteout: a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def make_whiteout(path: Path | str, dir_fd: int | None = None) -> None:
    """Hide `path` of the layers below in a DIFF layer: a 0/0 character device (overlayfs)."""
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dir_fd)


def set_opaque(target: int | str | Path, opaque_xattr: str = OPAQUE_XATTR) -> None:
    """Mark a DIFF layer's directory opaque (the lower ones' children hidden): `<opaque_xattr>=y`."""
    os.setxattr(target, opaque_xattr, b"y")
