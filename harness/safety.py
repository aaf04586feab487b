"""Guards for a tool that runs as root: where it may work and how it removes things."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UserError

__all__ = ["prepare_work_root", "remove_tree", "MARKER", "DEFAULT_WORK_ROOT"]

MARKER = ".layerbench-work-root"
DEFAULT_WORK_ROOT = Path("/var/tmp/layerbench")
_SYSTEM = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt",
           "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/tmp", "/var/lib"}


def prepare_work_root(path: Path) -> Path:
    """Check and make the work root: 0700, marked as ours; refuse a system or foreign directory."""
    resolved = Path(os.path.realpath(path))
    home = os.path.realpath(os.path.expanduser("~"))
    if str(resolved) in _SYSTEM or str(resolved) == home:
        raise UserError(f"--work-root {path}: refusing a system directory or the home directory; "
                        f"use a directory of its own, such as {DEFAULT_WORK_ROOT}")
    if resolved.exists():
        if not resolved.is_dir():
            raise UserError(f"--work-root {path}: not a directory")
        if any(resolved.iterdir()) and not (resolved / MARKER).exists():
            raise UserError(f"--work-root {path}: a non-empty directory layerbench did not make; "
                            f"pass an empty or new directory")
    else:
        resolved.mkdir(mode=0o700, parents=True)
    os.chmod(resolved, 0o700)
    (resolved / MARKER).touch()
    return resolved


def _mounts_below(path: str) -> list[str]:
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    return [p for p in points if p.startswith(prefix) or p == path]


def remove_tree(path: Path) -> None:
    """Remove `path` without following symlinks and without crossing into anything mounted.

    A mount still below `path` is an error (unmount first); missing is fine.
    """
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    mounted = _mounts_below(os.path.realpath(path))
    if mounted:
        raise RuntimeError(f"refusing to remove {path}: still mounted below it: {', '.join(mounted)}")
    shutil.rmtree(path)
