"""overlay2: kernel overlayfs in Docker's on-disk layout.

    <home>/<id>/diff     the layer's own content (upperdir of its container)
    <home>/<id>/link     a 26-character short name
    <home>/<id>/lower    l/<link>:l/<link>...  of every layer below, uppermost first
    <home>/<id>/work     overlay's workdir
    <home>/<id>/merged   the mount point, made on mount and removed on unmount
    <home>/l/<link>      symlink to ../<id>/diff

Lower layers are added one by one through the new mount API (`lowerdir+`, no page
limit, up to the kernel's 500); kernels without it get one mount(2) whose data
string of short `l/` names fits a page for 128 layers, as in Docker.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

from layerbench.harness import syscalls
from layerbench.harness.driver import Driver, LayerFormat, Style
from layerbench.harness.treecopy import copy_tree

from ._common import fs_in_kernel, needs_root, remove_tree, unmount_below

_LINK_ALPHABET = string.ascii_uppercase + string.digits
MAX_LOWERS_CLASSIC = 128


class Overlay2Driver(Driver):
    name = "overlay2"
    style = Style.UNION
    layer_format = LayerFormat.DIFF
    backings = ("ext4", "xfs", "btrfs")

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

    def _make(self, item_id: str, lower: str | None, diff_from: Path | None = None) -> Path:
        d = self.home / item_id
        d.mkdir(mode=0o700)
        diff = d / "diff"
        if diff_from is None:
            diff.mkdir(mode=0o755)
        else:
            copy_tree(str(diff_from), str(diff))
        link = "".join(secrets.choice(_LINK_ALPHABET) for _ in range(26))
        (d / "link").write_text(link)
        os.symlink(f"../{item_id}/diff", self.home / "l" / link)
        if lower is not None:
            (d / "lower").write_text(lower)
            (d / "work").mkdir(mode=0o700)
        return diff

    def _lower_of_child(self, parent: str) -> str:
        link = (self.home / parent / "link").read_text()
        lower_file = self.home / parent / "lower"
        below = lower_file.read_text() if lower_file.exists() else ""
        return f"l/{link}" + (f":{below}" if below else "")

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        return self._make(layer_id, None if parent is None else self._lower_of_child(parent))

    def create_container(self, container_id: str, image: str) -> None:
        self._make(container_id, self._lower_of_child(image))

    def mount(self, container_id: str) -> Path:
        d = self.home / container_id
        lowers = (d / "lower").read_text().split(":")
        merged = d / "merged"
        merged.mkdir()
        if self.new_api:
            home = str(self.home)
            syscalls.overlay_mount(
                str(merged),
                [f"{home}/{lower}" for lower in lowers],
                str(d / "diff"),
                str(d / "work"),
                [("index", "off")],
            )
        else:
            self._mount_classic(container_id, lowers, merged)
        return merged

    def _mount_classic(self, container_id: str, lowers: list[str], merged: Path) -> None:
        # Relative short names from inside <home>, as Docker does, so 128 lowers fit a page.
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
                [("index", "off")],
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
        self._make(layer_id, (d / "lower").read_text(), diff_from=d / "diff")

    def remove(self, item_id: str) -> None:
        d = self.home / item_id
        link_file = d / "link"
        if link_file.exists():
            (self.home / "l" / link_file.read_text()).unlink(missing_ok=True)
        remove_tree(d)

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
