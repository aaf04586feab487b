"""The one overlayfs mounting path, and the bookkeeping every overlay-layout driver shares.

:func:`mount_overlay` picks how to hand the kernel a lower-layer list, in order:

1. one mount(2) with the paths as given, when its data string fits a page (what
   Docker and containerd do first);
2. with `relative_to`, one mount(2) made from inside that directory with the paths
   below it relative to it, when that fits a page (Docker's `l/` names, containerd's
   mount from the snapshots' common parent);
3. with `fsconfig`, the new mount API: one `fsconfig(lowerdir+)` per lower and one
   `datadir+` per data-only lower (Linux >= 6.8; no page limit, up to 500 lowers);

else OSError(E2BIG). Data-only lowers (`data_lowers`, below the ordinary ones) are
written `lower::data` in a mount(2) data string.

Every overlay mount layerbench makes comes through here (fuse-overlayfs's daemon takes
the same options string, :func:`overlay_data`); `syscalls.overlay_mount` is only the
fsconfig side of step 3.

:class:`OverlayLayout` is a driver whose containers are overlay mounts: it keeps the
mounts a container at its merged directory, unmounts and closes; a
subclass says where a container's lowers, upper, work and merged directories are.
"""

from __future__ import annotations

import abc
import errno
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from layerbench.driver import Driver, LayerFormat, Style
from layerbench.kernel import syscalls

from ._common import fs_in_kernel, needs_root, remove_tree, unmount_below

__all__ = ["PAGE", "Options", "mount_overlay", "options_text", "overlay_data", "OverlayMount", "OverlayLayout"]

PAGE = os.sysconf("SC_PAGE_SIZE")
#: overlay mount options beyond the directories, in order; a None value is a flag ("userxattr")
Options = Mapping[str, str | None] | Iterable[tuple[str, str | None]]


def _pairs(options: Options) -> list[tuple[str, str | None]]:
    return list(options.items()) if isinstance(options, Mapping) else list(options)


def options_text(options: Options) -> str:
    """`index=off,userxattr`: the options as a mount(2) data string."""
    return ",".join(k if v is None else f"{k}={v}" for k, v in _pairs(options))


def overlay_data(
    lowers: Sequence[str], upper: str | None, work: str | None, options: Options = (), data_lowers: Sequence[str] = ()
) -> str:
    """The mount(2) data string: `lowerdir=A:B::D,upperdir=U,workdir=W,<options>`."""
    parts = ["lowerdir=" + ":".join(lowers) + "".join("::" + d for d in data_lowers)]
    if upper is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    if extra := options_text(options):
        parts.append(extra)
    return ",".join(parts)


def _relative(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def mount_overlay(
    target: str,
    lowers: Sequence[str],
    upper: str | None,
    work: str | None,
    options: Options = (),
    *,
    data_lowers: Sequence[str] = (),
    relative_to: str | None = None,
    fsconfig: bool = True,
) -> str:
    """Mount overlayfs on `target` (nodev, nosuid; `lowers` uppermost first); return how it was mounted.

    The answer is "mount(2)", "mount(2) relative" or "fsconfig" (see the module docstring).
    A read-only overlay has `upper` and `work` None.
    """
    target, pairs = os.path.abspath(target), _pairs(options)
    if len(data := overlay_data(lowers, upper, work, pairs, data_lowers)) < PAGE:
        syscalls.mount("overlay", target, "overlay", 0, data)
        return "mount(2)"
    if relative_to is not None:
        rel = [_relative(p, relative_to) for p in lowers]
        rel_data = [_relative(p, relative_to) for p in data_lowers]
        up, wk = (None, None) if upper is None else (_relative(upper, relative_to), _relative(str(work), relative_to))
        data = overlay_data(rel, up, wk, pairs, rel_data)
        if len(data) < PAGE:
            cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.chdir(relative_to)
                syscalls.mount("overlay", target, "overlay", 0, data)
            finally:
                os.fchdir(cwd)
                os.close(cwd)
            return "mount(2) relative"
    if fsconfig:
        syscalls.overlay_mount(target, lowers, upper, work, pairs, data_lowers)
        return "fsconfig"
    raise OSError(
        errno.E2BIG,
        f"overlay mount of {len(lowers)} lower layers: the data string does not fit "
        f"a {PAGE}-byte page and the kernel has no fsconfig lowerdir+",
        target,
    )


@dataclass
class OverlayMount:
    """What a container's overlay is made of (absolute paths; lowers uppermost first)."""

    merged: str
    lowers: list[str]
    upper: str | None
    work: str | None
    data_lowers: list[str] = field(default_factory=list)
    #: a directory from which shorter relative paths may be used when the data string is too long
    relative_to: str | None = None


class OverlayLayout(Driver):
    """A driver whose containers are overlay mounts; subclasses define the on-disk layout."""

    style = Style.UNION
    layer_format = LayerFormat.DIFF
    #: overlay mount options beyond the dirs (a None value is a flag)
    mount_options: ClassVar[tuple[tuple[str, str | None], ...]] = (("index", "off"),)

    @classmethod
    def probe(cls) -> str | None:
        """Root (for the mounts) and overlay in the kernel; subclasses add what they need beyond."""
        if reason := needs_root():
            return reason
        if not fs_in_kernel("overlay"):
            return "the kernel has no overlay filesystem (modprobe overlay)"
        return None

    def setup(self) -> None:
        self.new_api = syscalls.has_new_mount_api()
        #: how each mounted container was mounted ("mount(2)", "mount(2) relative", "fsconfig")
        self.mounted_via: dict[str, str] = {}

    @abc.abstractmethod
    def merged_dir(self, container_id: str) -> str:
        """The container's mount point (made by `mount`, removed by `unmount`)."""

    @abc.abstractmethod
    def overlay_of(self, container_id: str) -> OverlayMount:
        """Where the container's lowers, upper, work and merged directories are."""

    def mount(self, container_id: str) -> Path:
        spec = self.overlay_of(container_id)
        os.mkdir(spec.merged)
        try:
            self.mounted_via[container_id] = mount_overlay(
                spec.merged,
                spec.lowers,
                spec.upper,
                spec.work,
                self.mount_options,
                data_lowers=spec.data_lowers,
                relative_to=spec.relative_to,
                fsconfig=self.new_api,
            )
        except BaseException:
            os.rmdir(spec.merged)
            raise
        return Path(spec.merged)

    def unmount(self, container_id: str) -> None:
        merged = self.merged_dir(container_id)
        syscalls.umount(merged)
        os.rmdir(merged)
        self.mounted_via.pop(container_id, None)

    def close(self) -> None:
        unmount_below(self.home)
        if self.home.exists():
            for child in self.home.iterdir():
                remove_tree(child)
