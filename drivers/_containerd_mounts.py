"""Mounting what a containerd snapshotter's Mounts returns, as containerd's mount package does (one mount:
overlay, bind or a filesystem such as btrfs); always nodev,nosuid (kernel/syscalls.mount)."""

from __future__ import annotations

import errno
import os

from layerbench.kernel import syscalls

from ._overlay import mount_overlay
from .containerd_api import MountSpec

__all__ = ["mount_specs"]

_MS_REC = 16384


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


def mount_specs(specs: list[MountSpec], target: str) -> str:
    """Mount what containerd returned on `target` (one mount: overlay, bind or btrfs); return how."""
    if len(specs) != 1:
        raise OSError(errno.EINVAL, f"containerd returned {len(specs)} mounts; one is supported", target)
    spec = specs[0]
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
