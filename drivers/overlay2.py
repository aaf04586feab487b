"""overlay2: kernel overlayfs in Docker's on-disk layout.

    <home>/<id>/diff     the layer's own content (upperdir of its container)
    <home>/<id>/link     a 26-character short name
    <home>/<id>/lower    l/<link>:l/<link>...  of every layer below, uppermost first
    <home>/<id>/work     overlay's workdir
    <home>/<id>/merged   the mount point, made on mount and removed on unmount
    <home>/l/<link>      symlink to ../<id>/diff

The mount is one mount(2) when its data string fits a page; deeper images add
their lowers one by one through the new mount API (`lowerdir+`, no page limit, up
to the kernel's 500); kernels without it get Docker's fallback: relative `l/`
names from inside <home>, which fit a page for 128 layers.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import ClassVar

from layerbench.harness import syscalls
from layerbench.harness.driver import Driver, LayerFormat, Style
from layerbench.harness.treecopy import copy_tree

from ._common import Lineage, fs_in_kernel, needs_root, remove_tree, unmount_below

MAX_LOWERS_CLASSIC = 128
_PAGE = os.sysconf("SC_PAGE_SIZE")


_random = random.Random()


def _new_link() -> str:
    """A 26-character short name from [0-9A-F] (moby uses base32 of random bytes: same length)."""
    return format(_random.getrandbits(104), "026X")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)


class Overlay2Driver(Driver):
    name = "overlay2"
    style = Style.UNION
    layer_format = LayerFormat.DIFF
    backings = ("ext4", "xfs", "btrfs")
    in_default_run = True
    #: overlay mount options beyond the dirs, as Docker passes them (a None value is a flag)
    mount_options: ClassVar[tuple[tuple[str, str | None], ...]] = (("index", "off"),)

    @classmethod
    def probe(cls) -> str | None:
        if reason := needs_root():
            return reason
        if not fs_in_kernel("overlay"):
            return "the kernel has no overlay filesystem (modprobe overlay)"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"overlay_mount_api": "fsconfig lowerdir+" if syscalls.has_new_mount_api() else "mount(2)"}

    def setup(self) -> None:
        (self.home / "l").mkdir(exist_ok=True)
        self.new_api = syscalls.has_new_mount_api()
        self._options_text = ",".join(k if v is None else f"{k}={v}" for k, v in self.mount_options)
        # What this process wrote to `link` and `lower`, so hot paths need not read it back.
        self._links: dict[str, str] = {}
        self._lowers: dict[str, str | None] = {}
        self.lineage = Lineage()

    def _link(self, item_id: str) -> str:
        if item_id not in self._links:
            self._links[item_id] = _read(f"{self.home}/{item_id}/link")
        return self._links[item_id]

    def _lower(self, item_id: str) -> str | None:
        if item_id not in self._lowers:
            try:
                self._lowers[item_id] = _read(f"{self.home}/{item_id}/lower")
            except FileNotFoundError:  # a base layer
                self._lowers[item_id] = None
        return self._lowers[item_id]

    def _make(self, item_id: str, lower: str | None, diff_from: Path | None = None) -> str:
        d = f"{self.home}/{item_id}"
        os.mkdir(d, 0o700)
        if diff_from is None:
            os.mkdir(f"{d}/diff", 0o755)
        else:
            copy_tree(str(diff_from), f"{d}/diff")
        link = _new_link()
        _write(f"{d}/link", link)
        os.symlink(f"../{item_id}/diff", f"{self.home}/l/{link}")
        if lower is not None:
            _write(f"{d}/lower", lower)
            os.mkdir(f"{d}/work", 0o700)
        self._links[item_id], self._lowers[item_id] = link, lower
        return f"{d}/diff"

    def _lower_of_child(self, parent: str) -> str:
        below = self._lower(parent)
        return f"l/{self._link(parent)}" + (f":{below}" if below else "")

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        path = Path(self._make(layer_id, None if parent is None else self._lower_of_child(parent)))
        self.lineage.add(layer_id, parent)
        return path

    def create_container(self, container_id: str, image: str) -> None:
        self._make(container_id, self._lower_of_child(image))
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        home = str(self.home)
        d = f"{home}/{container_id}"
        lowers = [f"{home}/{lower}" for lower in (self._lower(container_id) or "").split(":")]
        target, upper, work = f"{d}/merged", f"{d}/diff", f"{d}/work"
        os.mkdir(target)
        data = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},{self._options_text}"
        if len(data) < _PAGE:  # one mount(2), as Docker does when the string fits a page
            syscalls.mount("overlay", target, "overlay", 0, data)
        elif self.new_api:  # one fsconfig(lowerdir+) per layer: no page limit
            syscalls.overlay_mount(target, lowers, upper, work, self.mount_options)
        else:
            self._mount_relative(container_id, Path(target))
        return Path(target)

    def _mount_relative(self, container_id: str, merged: Path) -> None:
        # Short relative names from inside <home>, as Docker does, so 128 lowers fit a page.
        lowers = (self._lower(container_id) or "").split(":")
        if len(lowers) > MAX_LOWERS_CLASSIC:
            raise OSError(f"max depth exceeded: {len(lowers)} lower layers > {MAX_LOWERS_CLASSIC}")
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(self.home)
            syscalls.overlay_mount(
                str(merged),
                lowers,
                f"{container_id}/diff",
                f"{container_id}/work",
                self.mount_options,
                new_api=False,
            )
        finally:
            os.fchdir(cwd)
            os.close(cwd)

    def unmount(self, container_id: str) -> None:
        merged = self.home / container_id / "merged"
        syscalls.umount(str(merged))
        merged.rmdir()

    def commit(self, container_id: str, layer_id: str) -> None:
        d = self.home / container_id
        self._make(layer_id, self._lower(container_id), diff_from=d / "diff")
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        if (self.home / item_id / "link").exists():
            (self.home / "l" / self._link(item_id)).unlink(missing_ok=True)
        remove_tree(self.home / item_id)
        self._links.pop(item_id, None)
        self._lowers.pop(item_id, None)
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        d = self.home / item_id
        data = {"UpperDir": str(d / "diff"), "WorkDir": str(d / "work"), "MergedDir": str(d / "merged")}
        lower_file = d / "lower"
        if lower_file.exists():
            data["LowerDir"] = ":".join(
                os.path.realpath(self.home / lower) for lower in lower_file.read_text().split(":")
            )
        return data

    def close(self) -> None:
        unmount_below(self.home)
        if self.home.exists():
            for child in self.home.iterdir():
                remove_tree(child)
