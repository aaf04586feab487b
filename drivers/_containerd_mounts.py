"""Mounting what a containerd snapshotter's Mounts returns, as containerd's mount package does (one mount:
overlay, bind or a filesystem such as btrfs); always nodev,nosuid (kernel/syscalls.mount).

containerd's answer is untrusted (a peer on a socket: `--containerd-address` may name any daemon), so
`mount_specs` mounts only what `check_specs` lets through, for the snapshotter asked: its own mount type
(overlayfs: overlay or, a snapshot without parents, a bind; native: a bind; btrfs: the filesystem holding
its root), options from a short list, and every path it names (a bind's source, lowerdir, upperdir,
workdir) absolute, normalised, free of the characters that end an option (`,` `:` `=` `\\`) and below the
snapshotter's root, where that root is known. A btrfs mount's source must be the block device of the
filesystem that holds the root, and its subvolume named by number only.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from layerbench.kernel import mountinfo, syscalls

from ._overlay import mount_overlay
from .containerd_api import MountSpec

__all__ = ["mount_specs", "check_specs", "Allowed"]

_MS_REC = 16384
#: the mount types each snapshotter's Mounts may return
_TYPES = {"overlayfs": ("overlay", "bind"), "native": ("bind",), "btrfs": ("btrfs",)}
#: options without a value that a mount of containerd's may carry
_FLAGS = frozenset({"ro", "rw", "bind", "rbind", "nodev", "nosuid", "index=off", "userxattr", "volatile"})
#: options whose value is a path (overlay) or a number (btrfs), by the mount type they belong to
_PATHS = {"overlay": ("lowerdir", "upperdir", "workdir"), "bind": (), "btrfs": ()}
_NUMBERS = {"overlay": (), "bind": (), "btrfs": ("subvolid",)}
_BAD = frozenset(",:=\\\n\0")


def _flags(options: tuple[str, ...]) -> tuple[int, list[str]]:
    """mount(2) flags for containerd's flag options, and the options left for the data string."""
    flags, data = 0, []
    for o in options:
        if o == "ro":
            flags |= syscalls.MS_RDONLY
        elif o == "bind":
            flags |= syscalls.MS_BIND
        elif o == "rbind":
            flags |= syscalls.MS_BIND | _MS_REC
        elif o not in ("rw", "nodev", "nosuid"):
            data.append(o)
    return flags, data


def _below(path: str, root: str | None, what: str) -> None:
    if not path or set(path) & _BAD or not os.path.isabs(path) or os.path.normpath(path) != path:
        raise OSError(errno.EPERM, f"containerd's mount {what} {path[:200]!r} is no plain absolute path")
    if root is not None and os.path.commonpath([root, path]) != root:
        raise OSError(errno.EPERM, f"containerd's mount {what} {path[:200]!r} is outside the snapshotter's root {root}")


def _device_of(root: str) -> str:
    """The source (block device) of the mount that holds `root`."""
    holding = [m for m in mountinfo.mounts() if os.path.commonpath([m.point, root]) == m.point]
    if not holding:
        raise OSError(errno.ENOENT, f"no mount holds {root}")
    return max(holding, key=lambda m: len(m.point)).source


@dataclass(frozen=True)
class Allowed:
    """What a snapshotter's mounts may name: its name, its root (None where containerd does not say it: a
    user's daemon's native plugin; paths are then checked for their form only) and, for btrfs, the block
    device of the filesystem holding that root (read once, before any clock)."""

    snapshotter: str
    root: str | None
    device: str | None = None

    @classmethod
    def of(cls, snapshotter: str, root: Path | str | None) -> Allowed:
        top = None if root is None else os.path.normpath(os.path.abspath(root))
        return cls(snapshotter, top, _device_of(top) if top is not None and snapshotter == "btrfs" else None)


def check_specs(specs: list[MountSpec], allowed: Allowed) -> MountSpec:
    """The one mount of `specs` if it is what `allowed.snapshotter` returns (module docstring), else
    OSError(EPERM) naming what is refused."""
    if len(specs) != 1:
        raise OSError(errno.EINVAL, f"containerd returned {len(specs)} mounts; one is supported")
    spec, snapshotter, top = specs[0], allowed.snapshotter, allowed.root
    if spec.type not in _TYPES.get(snapshotter, ()):
        raise OSError(errno.EPERM, f"containerd's {snapshotter} snapshotter returned a {spec.type[:40]!r} mount")
    kind = "bind" if spec.type == "bind" else spec.type
    for option in spec.options:
        key, _, value = option.partition("=")
        if option in _FLAGS:
            continue
        if key in _PATHS[kind] and value:
            for path in value.split(":") if key == "lowerdir" else (value,):
                _below(path, top, key)
        elif key in _NUMBERS[kind] and value.isdigit() and value.isascii():
            continue
        else:
            raise OSError(errno.EPERM, f"containerd's {spec.type} mount has the option {option[:80]!r}")
    if kind == "bind":
        if not {"bind", "rbind"} & set(spec.options):
            raise OSError(errno.EPERM, "containerd's bind mount has neither bind nor rbind")
        _below(spec.source, top, "source")
    elif kind == "overlay":
        if spec.option("lowerdir") is None:
            raise OSError(errno.EPERM, "containerd's overlay mount has no lowerdir")
        if (spec.option("upperdir") is None) != (spec.option("workdir") is None):
            raise OSError(errno.EPERM, "containerd's overlay mount has an upperdir or workdir without the other")
    else:  # btrfs: the device of the filesystem holding the root, a subvolume by number
        if top is None or allowed.device is None:
            raise OSError(errno.EPERM, "containerd's btrfs mount: the snapshotter's root is not known")
        try:
            is_device = stat.S_ISBLK(os.stat(spec.source).st_mode)
        except OSError:
            is_device = False
        if not is_device or spec.source != allowed.device:
            raise OSError(
                errno.EPERM, f"containerd's btrfs mount source {spec.source[:200]!r} is not the device holding {top}"
            )
        if spec.option("subvolid") is None:
            raise OSError(errno.EPERM, "containerd's btrfs mount names no subvolid")
    return spec


def mount_specs(specs: list[MountSpec], target: str, allowed: Allowed) -> str:
    """Mount what containerd returned on `target` (one mount: overlay, bind or btrfs), once `check_specs`
    lets it through; return how."""
    spec = check_specs(specs, allowed)
    flags, data = _flags(spec.options)
    if spec.type == "overlay":
        lowers = (spec.option("lowerdir") or "").split(":")
        upper, work = spec.option("upperdir"), spec.option("workdir")
        rest = [(o.split("=", 1)[0], o.split("=", 1)[1] if "=" in o else None) for o in data]
        rest = [kv for kv in rest if kv[0] not in ("lowerdir", "upperdir", "workdir")]
        return mount_overlay(
            target,
            lowers,
            upper,
            work,
            rest,
            relative_to=os.path.commonpath(lowers) if len(lowers) > 1 else None,
            fsconfig=syscalls.has_new_mount_api(),
        )
    if flags & syscalls.MS_BIND:
        syscalls.mount(spec.source, target, "", flags)
        return "bind"
    syscalls.mount(spec.source, target, spec.type, flags, ",".join(data))
    return spec.type
