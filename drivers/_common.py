"""Small helpers the built-in drivers share."""

from __future__ import annotations

import os
from pathlib import Path

from layerbench.driver import Lineage  # its home is the driver interface; here for code that imported it from here
from layerbench.kernel import safety, syscalls

__all__ = ["needs_root", "fs_in_kernel", "unmount_below", "remove_tree", "Lineage"]


def needs_root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (mounts and loop devices)"


def fs_in_kernel(fstype: str) -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


def unmount_below(root: Path) -> None:
    """Unmount every mount below `root`, deepest first (lazily if busy)."""
    syscalls.unmount_below(str(root))


def remove_tree(path: Path) -> None:
    """Remove `path` without following symlinks or crossing into a mount; missing is fine."""
    safety.remove_tree(path)
