"""containerd-overlayfs: kernel overlayfs in containerd's overlayfs snapshotter layout (Docker 29's default store).

    <home>/snapshots/<n>/fs     the snapshot's own content: a layer's diff, a container's upperdir
    <home>/snapshots/<n>/work   overlay's workdir (active snapshots: containers)
    <home>/rootfs/<id>          where a container (or view) is mounted, as a task's rootfs

`<n>` is a number from a sequence that never goes back (containerd's bolt sequence);
the key -> number map and each snapshot's parent chain live in memory here (in
containerd, metadata.db). Lowers are named by their full paths (no `l/` links, no
`link`/`lower` files), uppermost first.

Mounts, as plugins/snapshots/overlay/overlay.go makes them:

- a container (active snapshot) on any image: overlay with
  `lowerdir=<parents' fs>,upperdir=<fs>,workdir=<work>,index=off`;
- a read-only view of a single layer (`create_view`): no overlay, a read-only
  recursive bind mount of that layer's `fs`; a view of deeper images is an overlay
  with lowerdirs only (read-only by construction).

The one-page limit of mount(2): containerd (core/mount/mount_linux.go) shortens a
long lowerdir list by mounting from the lowers' common parent (`<home>/snapshots`)
with relative `<n>/fs` names (about 7 bytes a layer: some 500
layers fit). Where even that does not fit, this driver goes on where containerd
stops ("mount options is too long"): `lowerdir+` through fsconfig (Linux >= 6.8).
The mounting path is drivers/_overlay.py, shared with overlay2. Two small
differences from containerd: it compacts when the whole data string would not fit
a page (containerd: 512 bytes earlier), and it makes upperdir/workdir relative too.

`commit` is what Docker does with the containerd store: a new committed snapshot on
the container's image, filled with a copy of the container's upper directory.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from layerbench.kernel import syscalls
from layerbench.kernel.treecopy import copy_tree

from ._common import remove_tree
from ._overlay import OverlayLayout, OverlayMount

__all__ = ["ContainerdOverlayfsDriver"]

_MS_REC = 16384


class ContainerdOverlayfsDriver(OverlayLayout):
    """containerd's overlayfs snapshotter: numeric snapshot dirs, full lowerdir paths."""

    name = "containerd-overlayfs"
    backings = ("ext4", "xfs", "btrfs")
    in_default_run = False  # run it with -d containerd-overlayfs or -d all
    mount_options = (("index", "off"),)  # containerd adds index=off where the kernel knows it

    def setup(self) -> None:
        super().setup()
        os.mkdir(self.home / "snapshots", 0o700)
        os.mkdir(self.home / "rootfs", 0o700)
        self._seq = 0
        self._ids: dict[str, int] = {}
        #: each item's parent snapshots, uppermost first
        self._chain: dict[str, list[int]] = {}
        self._views: set[str] = set()

    # --- layout ------------------------------------------------------------------------

    def snapshot_dir(self, item_id: str) -> str:
        return f"{self.home}/snapshots/{self._ids[item_id]}"

    def parents(self, item_id: str) -> list[int]:
        """The numeric ids of the snapshots below `item_id`, uppermost first."""
        return self._chain[item_id]

    def lower_dirs(self, item_id: str) -> list[str]:
        """The directories overlay stacks below `item_id`, uppermost first."""
        return [f"{self.home}/snapshots/{n}/fs" for n in self._chain[item_id]]

    def _new_snapshot(self, item_id: str, parent: str | None, active: bool, fs_from: str | None = None) -> str:
        self.lineage.check_new(item_id)
        chain = [] if parent is None else [self._ids[parent], *self._chain[parent]]
        self._seq += 1
        d = f"{self.home}/snapshots/{self._seq}"
        os.mkdir(d, 0o700)
        if fs_from is None:
            os.mkdir(f"{d}/fs", 0o755)
        else:
            copy_tree(fs_from, f"{d}/fs")
        if active:
            os.mkdir(f"{d}/work", 0o711)
        self._ids[item_id], self._chain[item_id] = self._seq, chain
        self.lineage.add(item_id, parent)
        return f"{d}/fs"

    # --- the driver --------------------------------------------------------------------

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        return Path(self._new_snapshot(layer_id, parent, active=False))

    def create_container(self, container_id: str, image: str) -> None:
        self._new_snapshot(container_id, image, active=True)

    def create_view(self, view_id: str, image: str) -> None:
        """A read-only snapshot of `image` (containerd's View): `mount` makes it read-only."""
        self._new_snapshot(view_id, image, active=False)
        self._views.add(view_id)

    def merged_dir(self, container_id: str) -> str:
        return f"{self.home}/rootfs/{container_id}"

    def overlay_of(self, container_id: str) -> OverlayMount:
        d = self.snapshot_dir(container_id)
        view = container_id in self._views
        lowers = self.lower_dirs(container_id)
        return OverlayMount(
            merged=self.merged_dir(container_id),
            lowers=lowers,
            upper=None if view else f"{d}/fs",
            work=None if view else f"{d}/work",
            # containerd's compactLowerdirOption: mount from the lowers' common parent (<home>/snapshots)
            relative_to=os.path.commonpath(lowers) if len(lowers) > 1 else None,
        )

    def mount(self, container_id: str) -> Path:
        if container_id in self._views and len(self._chain[container_id]) == 1:
            return self._bind_read_only(container_id, self.lower_dirs(container_id)[0])
        return super().mount(container_id)

    def _bind_read_only(self, view_id: str, source: str) -> Path:
        """containerd's mount of one layer with no upper: `ro,rbind` of it (overlay needs two lowers)."""
        target = self.merged_dir(view_id)
        os.mkdir(target)
        try:
            syscalls.mount(source, target, "", syscalls.MS_BIND | _MS_REC | syscalls.MS_RDONLY)
        except BaseException:
            os.rmdir(target)
            raise
        self.mounted_via[view_id] = "bind"
        return Path(target)

    def commit(self, container_id: str, layer_id: str) -> None:
        self._new_snapshot(
            layer_id,
            self.lineage.parent.get(container_id),
            active=False,
            fs_from=f"{self.snapshot_dir(container_id)}/fs",
        )

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        if item_id not in self._ids:
            raise FileNotFoundError(errno.ENOENT, f"{self.name}: no snapshot {item_id!r}")
        remove_tree(Path(self.snapshot_dir(item_id)))
        del self._ids[item_id], self._chain[item_id]
        self._views.discard(item_id)
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        d = self.snapshot_dir(item_id)
        data = {"SnapshotID": str(self._ids[item_id]), "UpperDir": f"{d}/fs", "MergedDir": self.merged_dir(item_id)}
        if os.path.isdir(f"{d}/work"):
            data["WorkDir"] = f"{d}/work"
        if lowers := self.lower_dirs(item_id):
            data["LowerDir"] = ":".join(lowers)
        return data
