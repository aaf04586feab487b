"""Small helpers the built-in drivers share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from layerbench.harness import syscalls

__all__ = ["needs_root", "fs_in_kernel", "unmount_below", "remove_tree"]


def needs_root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (mounts and loop devices)"


def fs_in_kernel(fstype: str) -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


def unmount_below(root: Path) -> None:
    """Unmount every mount at or below `root`, deepest first (lazily if busy)."""
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        try:
            syscalls.umount(point)
        except OSError:
            syscalls.umount(point, syscalls.MNT_DETACH)


def remove_tree(path: Path) -> None:
    """Remove `path` without following symlinks out of it; missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
