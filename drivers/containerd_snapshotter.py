"""containerd's own snapshotters through its API: `containerd/overlayfs`, `containerd/native`, `containerd/btrfs`.

The engine, not a re-creation of it: `setup` starts Debian's containerd on the cell's
store (drivers/containerd_daemon.py), or, with `--containerd-address`, uses a user's
running daemon; everything is made in a namespace of our own (`layerbench-<hex>`)
under one lease, and removed by `close`.

    <home>/containerd/...     our daemon's config, root (metadata.db, content, each
                              snapshotter's root), state and socket
    <home>/staging/<id>       a layer while the harness fills it (a DIFF directory)
    <home>/staging/<id>.tar   that layer as an OCI tar, on its way to the content store
    <home>/rootfs/<id>        where a container is mounted, as a task's rootfs

- a layer: the filled directory packed as an uncompressed OCI tar
  (images/layer_pack.py), written to the content store, applied by the Diff service
  (containerd's applier, into a snapshot Prepared on the parent) and Committed under
  the layer's id; the blob is then deleted from the content store and the directory
  removed, so the disk is the snapshotter's alone (our mechanism drivers keep no blob);
- a container: Prepare on the image; `mount` asks Mounts (what a task's runtime is
  handed) and mounts exactly what it returns, as containerd's mount package does
  (overlay lowerdirs past a page from their common parent; drivers/_overlay.py);
- `commit`: the Diff service compares a View of the image with the container's
  mounts and writes the changes as a tar blob; that blob is applied to a snapshot
  Prepared on the image and Committed (what `nerdctl commit` does);
- `remove`: Remove (containerd refuses a snapshot with children: EBUSY).

Timed: every API call a step makes is inside its timed region (the engine is the
mechanism here); `inspect` adds the snapshotter's own Usage of the item.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import ClassVar

from layerbench.driver import Driver, LayerFormat, Style
from layerbench.images.layer_pack import pack_layer
from layerbench.kernel import syscalls

from ._common import fs_in_kernel, needs_root, remove_tree, unmount_below
from ._overlay import mount_overlay
from .containerd_api import Containerd, Descriptor, MountSpec
from .containerd_daemon import ContainerdDaemon

__all__ = [
    "ContainerdSnapshotterDriver",
    "ContainerdOverlayfsSnapshotter",
    "ContainerdNativeSnapshotter",
    "ContainerdBtrfsSnapshotter",
    "mount_specs",
]

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
_CHUNK = 1 << 20
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


class ContainerdSnapshotterDriver(Driver):
    """One of containerd's snapshotters, through containerd's API."""

    layer_format = LayerFormat.DIFF
    engine = "containerd"
    commit_xattrs = ("security.capability",)  # containerd's archive.ChangeWriter writes no other xattr
    #: the snapshotter's name in containerd
    snapshotter: ClassVar[str]
    #: the kernel filesystem it needs, if any
    kernel_fs: ClassVar[str | None] = None

    @classmethod
    def probe(cls) -> str | None:
        if reason := needs_root():
            return reason
        if cls.engine_address is None and shutil.which("containerd") is None:
            return "containerd is not installed (apt-get install containerd), and no --containerd-address was given"
        if cls.engine_address is not None:
            try:
                is_socket = stat.S_ISSOCK(os.stat(cls.engine_address).st_mode)
            except OSError as exc:
                return f"--containerd-address {cls.engine_address}: {exc.strerror}"
            if not is_socket:
                return f"--containerd-address {cls.engine_address}: not a unix socket"
        if cls.kernel_fs is not None and not fs_in_kernel(cls.kernel_fs):
            return f"the kernel has no {cls.kernel_fs} filesystem (modprobe {cls.kernel_fs})"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"containerd": _containerd_version() if cls.engine_address is None else f"at {cls.engine_address}"}

    def setup(self) -> None:
        self._mounted: dict[str, str] = {}
        self._containers: set[str] = set()  # active snapshots (committed ones have no mounts)
        #: how each mounted container was mounted ("mount(2)", "mount(2) relative", "fsconfig", "bind", "btrfs")
        self.mounted_via: dict[str, str] = {}
        self._made: list[str] = []  # snapshot keys, oldest first: `close` removes them newest first
        self.daemon: ContainerdDaemon | None = None
        self.client: Containerd | None = None
        for d in ("staging", "rootfs"):
            os.mkdir(self.home / d, 0o700)
        address = self.engine_address
        if address is None:
            os.mkdir(self.home / "containerd", 0o700)
            self.daemon = ContainerdDaemon(self.home / "containerd", self.ledger)
            address = self.daemon.start()
        self.client = Containerd(address, f"layerbench-{secrets.token_hex(6)}")
        self.client.wait_ready(30)
        loaded = self.client.snapshotters()
        if self.snapshotter not in loaded or loaded[self.snapshotter] is not None:
            why = loaded.get(self.snapshotter) or "not offered by this containerd"
            raise OSError(errno.ENOTSUP, f"{self.name}: containerd's {self.snapshotter} snapshotter: {why}")
        self.client.take_lease(self.client.namespace)

    @property
    def api(self) -> Containerd:
        if self.client is None:
            raise RuntimeError(f"{self.name}: not set up")
        return self.client

    # --- layers ------------------------------------------------------------------------

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.check_new(layer_id)
        staging = self.home / "staging" / layer_id
        os.mkdir(staging, 0o755)
        self.lineage.add(layer_id, parent)
        return staging

    def _apply_blob(self, blob: Descriptor, layer_id: str, parent: str | None) -> None:
        """Apply `blob` into a snapshot Prepared on `parent` and Commit it as `layer_id`; delete the blob."""
        key = f"extract-{layer_id}"
        mounts = self.api.prepare(self.snapshotter, key, parent or "")
        try:
            self.api.apply(blob, mounts)
            self.api.commit(self.snapshotter, layer_id, key)
        except BaseException:
            self.api.remove(self.snapshotter, key)
            raise
        finally:
            self.api.delete_content(blob.digest)
        self._made.append(layer_id)

    def seal_layer(self, layer_id: str) -> None:
        staging = self.home / "staging" / layer_id
        tar = self.home / "staging" / f"{layer_id}.tar"
        try:
            with open(tar, "wb") as out:
                digest, size = pack_layer(staging, out, self.opaque_xattr)
            remove_tree(staging)  # the tar holds the layer now: at most two copies of it on the store at once
            with open(tar, "rb") as f:
                self.api.write_content(
                    f"layerbench-{layer_id}", iter(functools.partial(f.read, _CHUNK), b""), size, digest
                )
            tar.unlink()
            self._apply_blob(Descriptor(LAYER_MEDIA_TYPE, digest, size), layer_id, self.lineage.parent[layer_id])
        finally:
            tar.unlink(missing_ok=True)
            remove_tree(staging)

    # --- containers --------------------------------------------------------------------

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self.api.prepare(self.snapshotter, container_id, image)
        self._made.append(container_id)
        self._containers.add(container_id)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        specs = self.api.mounts(self.snapshotter, container_id)
        target = str(self.home / "rootfs" / container_id)
        os.mkdir(target)
        try:
            self.mounted_via[container_id] = mount_specs(specs, target)
        except BaseException:
            os.rmdir(target)
            raise
        self._mounted[container_id] = target
        return Path(target)

    def unmount(self, container_id: str) -> None:
        target = self._mounted.pop(container_id)
        syscalls.umount(target)
        os.rmdir(target)
        self.mounted_via.pop(container_id, None)

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
        image = self.lineage.parent[container_id]
        view = f"view-{layer_id}"
        left = self.api.view(self.snapshotter, view, image or "")
        try:
            blob = self.api.diff(
                left, self.api.mounts(self.snapshotter, container_id), LAYER_MEDIA_TYPE, f"commit-{layer_id}"
            )
        finally:
            self.api.remove(self.snapshotter, view)
        self._apply_blob(blob, layer_id, image)
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        if item_id not in self.lineage:
            raise FileNotFoundError(errno.ENOENT, f"{self.name}: no snapshot {item_id!r}")
        self.lineage.check_removable(item_id)
        if item_id in self._made:
            self.api.remove(self.snapshotter, item_id)
            self._made.remove(item_id)
        else:  # a layer created and never sealed: only its staging directory exists
            remove_tree(self.home / "staging" / item_id)
        self._containers.discard(item_id)
        self.lineage.forget(item_id)

    def settle(self) -> None:
        """Wait until containerd has given removed snapshots' space back: a garbage collection run
        synchronously (a lease deleted with `sync`), the snapshotter's Cleanup, and (our daemon) no
        `rm-*` directory left in its root. Not timed."""
        self.api.collect_garbage(f"{self.api.namespace}-settle")
        try:
            self.api.cleanup(self.snapshotter)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # native and btrfs have no Cleanup in 1.6: their GC removes in place
                raise
        if self.daemon is None:
            return
        root = self.home / "containerd" / "root" / f"io.containerd.snapshotter.v1.{self.snapshotter}"
        for _ in range(200):
            if not any(p.name.startswith("rm-") for d in (root, root / "snapshots") if d.is_dir() for p in d.iterdir()):
                return
            time.sleep(0.05)

    def inspect(self, item_id: str) -> dict[str, str]:
        data = {"Snapshotter": self.snapshotter, "Key": item_id, "Namespace": self.api.namespace}
        if item_id in self._mounted:
            data["MergedDir"] = self._mounted[item_id]
        if item_id in self._containers and (spec := self.api.mounts(self.snapshotter, item_id)):
            data["MountType"] = spec[0].type
            data["MountOptions"] = ",".join(spec[0].options)
        size, inodes = self.api.usage(self.snapshotter, item_id)
        data["UsageBytes"], data["UsageInodes"] = str(size), str(inodes)
        return data

    def close(self) -> None:
        if not hasattr(self, "_mounted"):
            return  # never set up
        unmount_below(self.home / "rootfs")
        self._mounted.clear()
        if self.client is not None:
            try:
                for key in reversed(self._made):
                    try:
                        self.api.remove(self.snapshotter, key)
                    except FileNotFoundError:
                        pass
                self._made.clear()
                self.client.drop_lease()
                if self.daemon is None:
                    self.client.delete_namespace()  # a user's daemon: leave nothing of ours
            finally:
                self.client.close()
                self.client = None
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None
        unmount_below(self.home)
        if self.home.exists():
            for child in self.home.iterdir():
                remove_tree(child)


class ContainerdOverlayfsSnapshotter(ContainerdSnapshotterDriver):
    """containerd's overlayfs snapshotter (the default)."""

    name = "containerd/overlayfs"
    style = Style.UNION
    snapshotter = "overlayfs"
    kernel_fs = "overlay"
    backings = ("ext4", "xfs", "btrfs")
    mechanism = "containerd-overlayfs"


class ContainerdNativeSnapshotter(ContainerdSnapshotterDriver):
    """containerd's native snapshotter: every snapshot a full copy of its parent."""

    name = "containerd/native"
    style = Style.COPY
    snapshotter = "native"
    backings = ("ext4", "xfs", "btrfs")
    mechanism = "vfs"


class ContainerdBtrfsSnapshotter(ContainerdSnapshotterDriver):
    """containerd's btrfs snapshotter: subvolumes and snapshots (its root must be on btrfs)."""

    name = "containerd/btrfs"
    style = Style.SNAPSHOT
    snapshotter = "btrfs"
    kernel_fs = "btrfs"
    backings = ("btrfs",)
    mechanism = "btrfs"


@functools.cache
def _containerd_version() -> str:
    return ContainerdDaemon.version()
