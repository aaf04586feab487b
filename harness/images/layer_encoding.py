"""How a layer says "removed" and "replaced": the OCI whiteout and opaque-directory encoding.

In a layer tar, `.wh.<name>` removes `<name>` of the layers below and `.wh..wh..opq`
hides a directory's lower children. On a DIFF layer (overlayfs) they become a 0/0
character device and the driver's opaque xattr (`Driver.opaque_xattr`,
`trusted.overlay.opaque` by default; `user.overlay.opaque` for a rootless mount).
The one home of this encoding: layer import, synthetic images and the test trees use it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["WHITEOUT_PREFIX", "OPAQUE_MARKER", "OPAQUE_XATTR", "is_whiteout", "make_whiteout", "set_opaque"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    """Whether `st` is an overlay whiteout: a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def make_whiteout(path: Path | str, dir_fd: int | None = None) -> None:
    """Hide `path` of the layers below in a DIFF layer: a 0/0 character device (overlayfs)."""
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dir_fd)


def set_opaque(target: int | str | Path, opaque_xattr: str = OPAQUE_XATTR) -> None:
    """Mark a DIFF layer's directory opaque (the lower ones' children hidden): `<opaque_xattr>=y`."""
    os.setxattr(target, opaque_xattr, b"y")
