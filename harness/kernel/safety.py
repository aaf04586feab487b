"""Guards for a tool that runs as root: where it may work and how it removes things."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from layerbench.errors import UserError
from layerbench.kernel import mountinfo

__all__ = ["prepare_work_root", "remove_tree", "check_output_file", "check_output_dir", "MARKER", "DEFAULT_WORK_ROOT"]

MARKER = ".layerbench-work-root"
DEFAULT_WORK_ROOT = Path("/var/tmp/layerbench")
#: refused as work roots themselves
_SYSTEM = {"/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var", "/var/tmp"}
#: refused as work roots and anywhere below them (and /lib, /lib32, /lib64, /libx32 ...)
_SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/proc", "/run", "/sbin", "/sys", "/usr", "/var/lib")


def _system_tree(path: str) -> str | None:
    """The system directory `path` is or lies under, if any."""
    top = "/" + path.split("/")[1]
    if re.fullmatch(r"/lib(32|64|x32)?", top):
        return top
    return next((t for t in _SYSTEM_TREES if path == t or path.startswith(t + "/")), None)


def prepare_work_root(path: Path) -> Path:
    """Check and make the work root: 0700, marked as ours; refuse a system or foreign directory.

    Symlinks are resolved and every check is made before anything is created.
    """
    resolved = Path(os.path.realpath(path))
    home = os.path.realpath(os.path.expanduser("~"))
    shown = f"--work-root {path}" + (f" ({resolved})" if str(resolved) != str(path) else "")
    if (tree := _system_tree(str(resolved))) is not None:
        raise UserError(
            f"{shown}: refusing a directory under the system directory {tree}; "
            f"use a directory of its own, such as {DEFAULT_WORK_ROOT}"
        )
    if str(resolved) in _SYSTEM or str(resolved) == home:
        raise UserError(
            f"{shown}: refusing a system directory or the home directory; "
            f"use a directory of its own, such as {DEFAULT_WORK_ROOT}"
        )
    if resolved.exists():
        if not resolved.is_dir():
            raise UserError(f"{shown}: not a directory")
        if any(resolved.iterdir()) and not (resolved / MARKER).exists():
            raise UserError(f"{shown}: a non-empty directory layerbench did not make; pass an empty or new directory")
    try:
        resolved.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(resolved, 0o700)
        (resolved / MARKER).touch()
    except OSError as exc:
        raise UserError(f"{shown}: cannot make it ours: {exc.strerror}") from None
    return resolved


def _writable(folder: Path, what: str) -> None:
    """Refuse `folder` unless a file can be made in it (root ignores mode bits, not a read-only mount)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{what}: cannot write in {folder}: {exc.strerror}") from None


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file `option PATH` that cannot be written."""
    what = f"{option} {path}"
    if path.is_dir():
        raise UserError(f"{what}: is a directory; name a file")
    if not path.parent.is_dir():
        raise UserError(f"{what}: no such directory {path.parent}")
    _writable(path.parent, what)


def check_output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, an output directory that cannot be made or written (checked
    on its nearest existing ancestor, where it would be made)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is not a directory")
    _writable(existing, f"{option} {path}")


def remove_tree(path: Path) -> None:
    """Remove `path` without following symlinks and without crossing into anything mounted.

    A mount still below `path` is an error (unmount first); missing is fine.
    """
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    mounted = mountinfo.points_below(os.path.realpath(path))
    if mounted:
        raise RuntimeError(f"refusing to remove {path}: still mounted below it: {', '.join(mounted)}")
    shutil.rmtree(path)
