"""Small helpers the built-in drivers share."""

from __future__ import annotations

import json
import os
from pathlib import Path

from layerbench.driver import Lineage  # its home is the driver interface; here for code that imported it from here
from layerbench.kernel import safety, syscalls

__all__ = ["needs_root", "fs_in_kernel", "unmount_below", "remove_tree", "toml_string", "Lineage"]


def toml_string(text: str) -> str:
    """`text` as a TOML basic string, every quote, backslash and control character escaped (JSON's escapes are
    TOML's): a path written into an engine's config is that path, never a string ended early or a `\\t` read
    as a tab (a work root `/var/tmp/a\\tb` put Podman's graphroot and hooks_dir in `/var/tmp/a<TAB>b`, a
    directory any user may make)."""
    return json.dumps(text)


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
