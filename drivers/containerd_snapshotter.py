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
    <home>/crun               crun's state and bundles of the run step's containers

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
- the cold start (run/engine.py's EngineImages): the `pull` step is containerd's own client,
  `ctr images pull --plain-http --snapshotter NAME REF` on our socket and namespace (the
  command is the mechanism: ctr fetches into containerd's content store and unpacks each
  layer through the daemon's Diff service into the snapshotter; with 1.6.20 `--snapshotter
  btrfs` lands in btrfs, which `ctr images mount --snapshotter` does not honour). What it
  fetched is read from containerd's records after: the manifest's layer blobs the content
  store did not list before. The `run` step's containers are containerd's snapshot and
  record, mounted in crun's namespace and started by crun (drivers/_containerd_container.py).

Timed: every API call a step makes is inside its timed region (the engine is the
mechanism here); `inspect` adds the snapshotter's own Usage of the item.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from time import perf_counter_ns
from typing import Any, ClassVar

from layerbench.driver import Driver, LayerFormat, Style
from layerbench.images.layer_pack import pack_layer
from layerbench.kernel import namespaces, syscalls
from layerbench.run.engine import EnginePulled

from ._common import fs_in_kernel, needs_root, remove_tree, unmount_below
from ._containerd_container import ContainerdContainer, valid_identifier
from ._containerd_mounts import Allowed, mount_specs
from ._containerd_namespace import LEDGER_KIND, clear_namespace, ledger_entry, namespace_name, refused
from .containerd_api import Containerd, Descriptor
from .containerd_daemon import ContainerdDaemon

__all__ = [
    "ContainerdSnapshotterDriver",
    "ContainerdOverlayfsSnapshotter",
    "ContainerdNativeSnapshotter",
    "ContainerdBtrfsSnapshotter",
    "mount_specs",
    "chain_id",
]

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
_CHUNK = 1 << 20
#: a reference the harness's registry gives (host:port/name:tag): ctr's last argument, never an option
_REFERENCE = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9.\[\]:-]*/[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: the most a manifest or config read from the content store may hold (they are untrusted)
_MAX_JSON = 8 << 20
_INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
#: the runtime name our container records carry: not a containerd shim (no task service here)
RECORD_RUNTIME = "layerbench.crun"
#: below the snapshotter's root, where the files a start reads are (not its metadata.db): each layer's and
#: container's snapshot under overlayfs and native; under btrfs, the containers' own subvolumes (a start reads
#: its snapshot's inodes, never the committed layers': each subvolume has its own page cache)
_IMAGE_FILES = {"overlayfs": "snapshots", "native": "snapshots", "btrfs": "active"}


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
        if cls.engine_address is not None and (why := refused(cls.engine_address)) is not None:
            return f"--containerd-address {cls.engine_address}: {why}"
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
        self._pulled: dict[str, tuple[str, str]] = {}  # image item id -> (containerd's image name, chain id)
        self._records: set[str] = set()  # container records (run_image's containers)
        for d in ("staging", "rootfs", "crun"):
            os.mkdir(self.home / d, 0o700)
        self._entry: str | None = None  # our namespace on a user's daemon, as the ledger names it
        namespace = namespace_name(self.ledger.run_id if self.ledger is not None else None)
        address = self.engine_address
        if address is None:
            os.mkdir(self.home / "containerd", 0o700)
            self.daemon = ContainerdDaemon(self.home / "containerd", self.ledger)
            address = self.daemon.start()
        elif self.ledger is not None:  # written down before anything is made there: `cleanup` empties it
            self._entry = ledger_entry(namespace, address)
            self.ledger.made(LEDGER_KIND, self._entry)
        self.client = Containerd(address, namespace)
        self.client.wait_ready(30)
        loaded = self.client.snapshotters()
        if self.snapshotter not in loaded or loaded[self.snapshotter] is not None:
            why = loaded.get(self.snapshotter) or "not offered by this containerd"
            raise OSError(errno.ENOTSUP, f"{self.name}: containerd's {self.snapshotter} snapshotter: {why}")
        self.client.take_lease(self.client.namespace)
        ours = self.home / "containerd" / "root" / f"io.containerd.snapshotter.v1.{self.snapshotter}"
        root = self.client.snapshotter_root(self.snapshotter) if self.daemon is None else None
        self._snapshotter_root = ours if self.daemon is not None else Path(root) if root else None
        #: what the snapshotter's Mounts may name: containerd's answer is checked before anything is mounted
        self.allowed = Allowed.of(self.snapshotter, self._snapshotter_root)

    def _parent(self, image: str) -> str:
        """The snapshot an item's children stand on: a pulled image's chain id, else the layer's own key."""
        return self._pulled[image][1] if image in self._pulled else image

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

    # --- containerd's own pull, and a run from its snapshot (run/engine.py) -------------

    def pull_image(self, reference: str, image_id: str, created: list[str]) -> EnginePulled:
        """`ctr images pull --plain-http --snapshotter NAME REFERENCE`, containerd's own client, timed alone: it
        fetches the blobs into containerd's content store and unpacks each layer through the daemon's Diff
        service into a snapshot of ours. What it fetched is read from containerd's records after, untimed: the
        manifest's layer blobs the content store did not list before, with the size it recorded of each."""
        self.lineage.check_new(image_id)
        if _REFERENCE.fullmatch(reference) is None:
            raise ValueError(f"{self.name}: {reference!r} is not a registry reference (host:port/name:tag)")
        before = self.api.content_sizes()
        argv = ["ctr", "--address", self.api.address, "--namespace", self.api.namespace, "images", "pull"]
        argv += ["--plain-http", "--snapshotter", self.snapshotter, reference]
        fds = self.daemon.pass_fds if self.daemon is not None else ()  # a socket reached by /proc/self/fd/N
        t0 = perf_counter_ns()
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd="/",
            pass_fds=fds,
            preexec_fn=namespaces.die_with_parent,
        )
        t1 = perf_counter_ns()
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"]
            raise OSError(errno.EIO, f"{self.name}: ctr images pull {reference}: {lines[-1][-400:]}")
        try:
            layers, diff_ids = self._image_of(reference)
        except BaseException:
            if all(n != reference for n, _ in self._pulled.values()):
                self.api.delete_image(reference)  # a record no item names: gone with what it holds
            raise
        self._pulled[image_id] = (reference, chain_id(diff_ids))
        self.lineage.add(image_id, None)
        created.append(image_id)
        after = self.api.content_sizes()
        return EnginePulled(t1 - t0, {d: after[d] for d in layers if d not in before and d in after})

    def _image_of(self, name: str) -> tuple[list[str], list[str]]:
        """Image `name`'s layer digests and diff ids, from containerd's image record and content store."""
        target = self.api.image_target(name)
        manifest = _json_object(self.api.read_content(target.digest, _MAX_JSON), f"{name}: manifest")
        if target.media_type in _INDEXES or "manifests" in manifest:
            raise OSError(errno.ENOTSUP, f"{self.name}: {name} is an image index; a single manifest is expected")
        layers = [_digest(d.get("digest") if isinstance(d, dict) else None, name) for d in _list(manifest, "layers")]
        config_desc = manifest.get("config")
        config_digest = _digest(config_desc.get("digest") if isinstance(config_desc, dict) else None, name)
        config = _json_object(self.api.read_content(config_digest, _MAX_JSON), f"{name}: config")
        rootfs = config.get("rootfs")
        diff_ids = [_digest(d, name) for d in _list(rootfs if isinstance(rootfs, dict) else {}, "diff_ids")]
        if not layers or len(diff_ids) != len(layers):
            raise OSError(errno.EINVAL, f"{self.name}: {name}: {len(layers)} layers but {len(diff_ids)} diff ids")
        return layers, diff_ids

    def image_files(self) -> Path:
        if self._snapshotter_root is None:  # a user's daemon whose snapshotter does not export its root (native)
            raise OSError(errno.ENOTSUP, f"{self.name}: containerd does not say where {self.snapshotter} keeps files")
        return self._snapshotter_root / _IMAGE_FILES[self.snapshotter]

    def run_image(
        self, container_id: str, image_id: str, runtime: str, argv: tuple[str, ...], env: tuple[str, ...], cwd: str
    ) -> ContainerdContainer:
        if runtime != "crun":
            raise RuntimeError(f"{self.name}: containers start through crun here (no task service), not {runtime!r}")
        self.lineage.check_new(container_id)
        if image_id not in self.lineage:
            raise FileNotFoundError(errno.ENOENT, f"{self.name}: no image {image_id!r}")
        if not valid_identifier(container_id):
            raise ValueError(f"{self.name}: {container_id!r} is not a containerd identifier")
        return ContainerdContainer(self, container_id, image_id, argv, env, cwd)

    def made_container(self, container_id: str, image_id: str, spec: bytes) -> None:
        """A run's container as containerd's client makes one (ContainerdContainer.make): its active snapshot on
        the image, then its record; an item of the store from then on."""
        self.api.prepare(self.snapshotter, container_id, self._parent(image_id))
        self._made.append(container_id)
        self._containers.add(container_id)
        self.lineage.add(container_id, image_id)
        image = self._pulled[image_id][0] if image_id in self._pulled else ""
        self.api.create_container(container_id, image, RECORD_RUNTIME, spec, self.snapshotter, container_id)
        self._records.add(container_id)

    # --- containers --------------------------------------------------------------------

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self.api.prepare(self.snapshotter, container_id, self._parent(image))
        self._made.append(container_id)
        self._containers.add(container_id)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        specs = self.api.mounts(self.snapshotter, container_id)
        target = str(self.home / "rootfs" / container_id)
        os.mkdir(target)
        try:
            self.mounted_via[container_id] = mount_specs(specs, target, self.allowed)
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
        left = self.api.view(self.snapshotter, view, self._parent(image) if image else "")
        try:
            blob = self.api.diff(
                left, self.api.mounts(self.snapshotter, container_id), LAYER_MEDIA_TYPE, f"commit-{layer_id}"
            )
        finally:
            self.api.remove(self.snapshotter, view)
        self._apply_blob(blob, layer_id, self._parent(image) if image else None)
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        if item_id not in self.lineage:
            raise FileNotFoundError(errno.ENOENT, f"{self.name}: no snapshot {item_id!r}")
        self.lineage.check_removable(item_id)
        if item_id in self._records:  # the record first, then its snapshot (containerd's client does so)
            self.api.delete_container(item_id)
            self._records.discard(item_id)
        if item_id in self._pulled:
            name, _chain = self._pulled.pop(item_id)
            if all(n != name for n, _ in self._pulled.values()):  # one image pulled twice: two items, one record
                self.api.delete_image(name)  # sync: containerd collects its blobs and snapshots
        elif item_id in self._made:
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
                for cid in list(self._records):
                    try:
                        self.api.delete_container(cid)
                    except FileNotFoundError:
                        pass
                self._records.clear()
                for key in reversed(self._made):
                    try:
                        self.api.remove(self.snapshotter, key)
                    except FileNotFoundError:
                        pass
                self._made.clear()
                for name in {n for n, _ in self._pulled.values()}:
                    try:
                        self.api.delete_image(name)
                    except FileNotFoundError:
                        pass
                self._pulled.clear()
                self.client.drop_lease()
                if self.daemon is None:  # a user's daemon: leave nothing of ours (what `cleanup` does too)
                    clear_namespace(self.client)
                    if self.ledger is not None and self._entry is not None:
                        self.ledger.released(LEDGER_KIND, self._entry)
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


def chain_id(diff_ids: list[str]) -> str:
    """The chain id of a stack of layers (OCI image-spec `config.md`): the key of its top snapshot in containerd."""
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise OSError(errno.EINVAL, f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise OSError(errno.EINVAL, f"{what} is not a JSON object")
    return value


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def _digest(value: object, image: str) -> str:
    if not isinstance(value, str) or _DIGEST.fullmatch(value) is None:
        raise OSError(errno.EINVAL, f"{image}: {str(value)[:80]!r} is not a sha256 digest")
    return value


@functools.cache
def _containerd_version() -> str:
    return ContainerdDaemon.version()
