"""/proc/PID/mountinfo, read in one place (proc(5)): each mount's point, type and options."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Mount", "mounts", "mount_points", "points_below"]

_ESCAPE = re.compile(r"\\([0-7]{3})")  # the kernel writes space, tab, newline and backslash as \ooo


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: the mount point, its filesystem, source and options."""

    point: str
    fstype: str
    source: str
    options: frozenset[str]  # the mount's own (per-mount) options: rw, nodev, nosuid, ...
    super_options: str  # the filesystem's, as one string: lowerdir=...,upperdir=...

    def has(self, *options: str) -> bool:
        """Whether every one of `options` is among the mount's own options."""
        return all(o in self.options for o in options)


def mounts(pid: int | str = "self") -> list[Mount]:
    """Every mount in the mount namespace of `pid`, in mount order."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-", 6)
            out.append(
                Mount(
                    point=_unescape(fields[4]),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                    options=frozenset(fields[5].split(",")),
                    super_options=_unescape(fields[sep + 3]) if len(fields) > sep + 3 else "",
                )
            )
    return out


def mount_points(pid: int | str = "self") -> list[str]:
    """Every mount point in the mount namespace of `pid` (default: this process's), in mount order."""
    return [m.point for m in mounts(pid)]


def points_below(root: str, include_root: bool = True, *, pid: int | str = "self") -> list[str]:
    """Mount points below `root` (and `root` itself, if asked) in the namespace of `pid`, in mount order."""
    root = root.rstrip("/") or "/"
    prefix = root if root == "/" else root + "/"
    return [p for p in mount_points(pid) if p.startswith(prefix) or (include_root and p == root)]
