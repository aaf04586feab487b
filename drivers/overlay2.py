"""overlay2: kernel overlayfs in Docker's on-disk layout.

    <home>/<id>/diff     the layer's own content (upperdir of its container)
    <home>/<id>/link     a 26-character short name
    <home>/<id>/lower    l/<link>:l/<link>...  of every layer below, uppermost first
    <home>/<id>/work     overlay's workdir
    <home>/<id>/merged   the mount point, made on mount and removed on unmount
    <home>/l/<link>      symlink to ../<id>/diff

The mount (drivers/_overlay.py, shared with every overlay driver) is one mount(2)
when its data string fits a page; deeper images add their lowers one by one through
the new mount API (`lowerdir+`, no page limit, up to the kernel's 500); kernels
without it get Docker's fallback: relative `l/` names from inside <home>, which fit
a page for 128 layers.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import ClassVar

from layerbench.kernel import syscalls
from layerbench.kernel.treecopy import copy_tree

from ._common import remove_tree
from ._overlay import OverlayLayout, OverlayMount

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


class Overlay2Driver(OverlayLayout):
    name = "overlay2"
    backings: ClassVar[tuple[str, ...]] = ("ext4", "xfs", "btrfs")
    in_default_run = True
    adopts_store = True  # every link and lower file is on the store; the caches below are read back from it
    #: overlay mount options beyond the dirs, as Docker passes them (a None value is a flag)
    mount_options: ClassVar[tuple[tuple[str, str | None], ...]] = (("index", "off"),)

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"overlay_mount_api": "fsconfig lowerdir+" if syscalls.has_new_mount_api() else "mount(2)"}

    def setup(self) -> None:
        super().setup()
        (self.home / "l").mkdir(exist_ok=True)
        # What this process wrote to `link` and `lower`, so hot paths need not read it back.
        self._links: dict[str, str] = {}
        self._lowers: dict[str, str | None] = {}

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
        self.lineage.check_new(layer_id)
        path = Path(self._make(layer_id, None if parent is None else self._lower_of_child(parent)))
        self.lineage.add(layer_id, parent)
        return path

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self._make(container_id, self._lower_of_child(image))
        self.lineage.add(container_id, image)

    def merged_dir(self, container_id: str) -> str:
        return f"{self.home}/{container_id}/merged"

    def overlay_of(self, container_id: str) -> OverlayMount:
        home = str(self.home)
        d = f"{home}/{container_id}"
        return OverlayMount(
            merged=f"{d}/merged",
            lowers=[f"{home}/{lower}" for lower in (self._lower(container_id) or "").split(":")],
            upper=f"{d}/diff",
            work=f"{d}/work",
            # Docker's relative `l/` names only where there is no fsconfig lowerdir+ (which comes first)
            relative_to=None if self.new_api else home,
        )

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
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
