"""Small helpers the built-in drivers share."""

from __future__ import annotations

import errno
import os
from pathlib import Path

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


class Lineage:
    """Who was made on whom, so `remove` can refuse a layer that still has children.

    A committed layer's parent is its container's image. Kept in memory: it covers
    what this driver object made.
    """

    def __init__(self) -> None:
        self.parent: dict[str, str | None] = {}
        self.children: dict[str, set[str]] = {}

    def add(self, item_id: str, parent: str | None) -> None:
        self.parent[item_id] = parent
        if parent is not None:
            self.children.setdefault(parent, set()).add(item_id)

    def add_commit(self, layer_id: str, container_id: str) -> None:
        self.add(layer_id, self.parent.get(container_id))

    def check_removable(self, item_id: str) -> None:
        """Raise OSError(EBUSY) when `item_id` has children."""
        if kids := self.children.get(item_id):
            raise OSError(errno.EBUSY, f"layer {item_id!r} has children ({', '.join(sorted(kids))}); remove them first")

    def forget(self, item_id: str) -> None:
        parent = self.parent.pop(item_id, None)
        if parent is not None:
            self.children.get(parent, set()).discard(item_id)
        self.children.pop(item_id, None)
