"""Podman as an engine driver, on its own storage drivers: `podman/overlay`, `podman/vfs`, `podman/btrfs`.

The engine's commands are the mechanism here: every timed region of these drivers runs
`podman` (a Go program started per command, some tens of milliseconds each), as a user
of Podman pays it. The figures answer "what does Podman cost?", not "what does the
storage driver cost?" (the mechanism drivers `overlay2`, `vfs`, `btrfs` answer that).

    <home>/root                Podman's graph root (containers-storage)
    <home>/run                 its run root, and crun's state: bound over /run in Podman's namespace
    <home>/tmp                 libpod's tmp dir and TMPDIR (image pulls' scratch)
    <home>/*.conf, policy.json our containers.conf, storage.conf and signature policy; nothing else read
    <home>/hooks.d             one OCI hook: the container's root remounted nodev,nosuid (crun's bind drops them)
    <home>/oci                 an OCI layout of the layers built so far (the blobs Podman pulls from)
    <home>/staging/<id>        a layer while the harness fills it (a DIFF directory)

Podman runs, by the machine's rules, in a private mount namespace with an empty tmpfs
over /sys/fs/cgroup: `setup` starts a holder process there (`unshare -m`, written in
the run's ledger as a `daemon` before it runs); every command is `nsenter`ed into its
namespace with `--cgroups=disabled` and `--ulimit nofile=1024:1024 --ulimit
nproc=4096:4096` for containers; no cgroup is created or joined. A container's mount
(`podman mount`) exists in that namespace only: `mount` returns it through
`/proc/<holder>/root/...`, and when the holder ends (`close`, or `cleanup` after a
crash) every mount Podman made goes with its namespace.

- a layer: the filled directory packed as an OCI tar (images/layer_pack.py) into the
  OCI layout with a manifest of all layers so far, then `podman pull oci:<layout>:<id>`
  (containers/image copies it, containers-storage applies it; lower layers already
  there are skipped, as from a registry);
- start: `podman create` + `podman mount`; commit: `podman commit`; remove: `podman rm`
  / `podman rmi` (a layer with children is refused here first: EBUSY);
- the cold start (run/engine.py's EngineImages): the `pull` step's `podman pull` from the
  cell's registry (`pull_image`), the `run` step's `podman create` / `init` / `start
  --attach` (`run_image`, drivers/_podman_container.py).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from time import perf_counter_ns
from typing import Any, ClassVar

from layerbench.driver import Driver, LayerFormat, Style
from layerbench.images.layer_pack import pack_layer
from layerbench.kernel import namespaces
from layerbench.run.engine import EnginePulled
from layerbench.run.ledger import TAG, daemon_id

from ._common import fs_in_kernel, needs_root, remove_tree, toml_string
from ._podman_container import PodmanContainer

__all__ = ["PodmanDriver", "PodmanOverlay", "PodmanVfs", "PodmanBtrfs"]

_LAYER = "application/vnd.oci.image.layer.v1.tar"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: the holder: held by `read` until the ledger has its pid, then (same pid) a private mount
#: namespace with an empty tmpfs over /sys/fs/cgroup and the home's run/ ($1) bound over /run, kept
#: alive by sleep. /run: Podman refuses a run root path over 50 characters in the cleanup command conmon
#: runs when a container exits (a store's is longer), and crun keeps its state in /run/crun: both
#: stay on the cell's store, and nothing lands in the machine's /run.
_HOLDER = (
    "read -r _ && exec unshare -m --propagation private sh -c "
    '"mount -t tmpfs -o nodev,nosuid,noexec,size=1m tmpfs /sys/fs/cgroup && mount --bind \\"\\$0\\" /run '
    '&& echo ready && exec sleep infinity" "$1"'
)
#: the createContainer hook: the root path from the state crun writes on its stdin ({..."root":"PATH",...}),
#: that bind remounted nodev,nosuid
_ROOT_NODEV = (
    'state=$(cat) && root=${state#*\\"root\\":\\"} && root=${root%%\\"*} '
    '&& exec mount -o remount,bind,nosuid,nodev "$root"'
)
_CONTAINER_LIMITS = ("--cgroups=disabled", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PodmanDriver(Driver):
    """Podman with one of its storage drivers, driven by its commands."""

    layer_format = LayerFormat.DIFF
    engine = "podman"
    #: containers-storage's driver name
    storage_driver: ClassVar[str]
    kernel_fs: ClassVar[str | None] = None

    @classmethod
    def probe(cls) -> str | None:
        if reason := needs_root():
            return reason
        for tool, package in (("podman", "podman"), ("nsenter", "util-linux"), ("unshare", "util-linux")):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (apt-get install {package})"
        if cls.kernel_fs is not None and not fs_in_kernel(cls.kernel_fs):
            return f"the kernel has no {cls.kernel_fs} filesystem (modprobe {cls.kernel_fs})"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"podman": _podman_version()}

    # --- the engine --------------------------------------------------------------------

    def setup(self) -> None:
        self._images: dict[str, str] = {}  # layer id -> Podman's image id
        self._layers: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}  # layer id -> its descriptors, diff ids
        self._containers: set[str] = set()
        self._ran: set[str] = set()  # containers made by run_image (PodmanContainer)
        self._mounted: set[str] = set()
        self._holder: subprocess.Popen[bytes] | None = None
        self._ident = ""
        h = self.home
        for d in ("root", "run", "tmp", "staging", "oci", "oci/blobs", "oci/blobs/sha256"):
            os.mkdir(h / d, 0o700)
        (h / "oci" / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (h / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        # nodev,nosuid on the roots Podman mounts itself (overlay), as on every mount layerbench makes; vfs and
        # btrfs roots are directories of the store's mount, which is nodev,nosuid already
        (h / "storage.conf").write_text(
            f"[storage]\ndriver = {toml_string(self.storage_driver)}\ngraphroot = {toml_string(f'{h}/root')}\n"
            'runroot = "/run"\n'
            '[storage.options.overlay]\nmountopt = "nodev,nosuid"\n'
        )
        # conmon carries the run's tag, so `cleanup` may end it (and the process it starts) after a crash
        conmon_env = [f"PATH={_PATH}", *([f"{TAG}={os.environ[TAG]}"] if TAG in os.environ else [])]
        (h / "containers.conf").write_text(
            f'[engine]\nevents_logger = "none"\ntmp_dir = {toml_string(f"{h}/tmp")}\ncgroup_manager = "cgroupfs"\n'
            f"conmon_env_vars = {json.dumps(conmon_env)}\n"
            f"hooks_dir = [{toml_string(f'{h}/hooks.d')}]\n"
            '[containers]\ncgroups = "disabled"\n'
        )
        os.mkdir(h / "hooks.d", 0o700)
        # crun binds the container's root without the nodev,nosuid of the mount under it (a driver's overlay,
        # the store's for vfs and btrfs); this hook, in the container's mount namespace before pivot_root,
        # remounts that bind nodev,nosuid, as the harness's own crun bundles do (run/runtime.py)
        hook = {
            "version": "1.0.0",
            "hook": {"path": "/bin/sh", "args": ["sh", "-c", _ROOT_NODEV]},
            "when": {"always": True},
            "stages": ["createContainer"],
        }
        (h / "hooks.d" / "nodev.json").write_text(json.dumps(hook))
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CONTAINERS_CONF": str(h / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(h / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(h / "registries.conf"),
            "TMPDIR": str(h / "tmp"),
        }
        (h / "registries.conf").write_text("")
        self._start_holder()

    def _start_holder(self) -> None:
        self._holder = subprocess.Popen(
            ["/bin/sh", "-c", _HOLDER, "holder", str(self.home / "run")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._ident = daemon_id(self._holder.pid)
        if self.ledger is not None:
            self.ledger.made("daemon", self._ident)
        assert self._holder.stdin is not None and self._holder.stdout is not None
        self._holder.stdin.write(b"go\n")
        self._holder.stdin.close()
        line = self._holder.stdout.readline().strip()
        if line != b"ready":
            self._stop_holder()
            raise OSError(
                f"{self.name}: the private mount namespace for Podman failed: {line.decode(errors='replace')}"
            )

    def _stop_holder(self) -> None:
        if self._holder is None:
            return
        if self._holder.poll() is None:
            self._holder.kill()  # sleep holds nothing: its namespace and every mount in it go with it
        self._holder.wait()
        if self._holder.stdout is not None:
            self._holder.stdout.close()
        self._holder = None
        if self.ledger is not None:
            self.ledger.released("daemon", self._ident)

    def _argv(self, args: list[str] | tuple[str, ...], wd: Path | None = None) -> list[str]:
        if self._holder is None:
            raise RuntimeError(f"{self.name}: not set up")
        where = [f"--wdns={wd}"] if wd is not None else []
        return ["nsenter", "-t", str(self._holder.pid), "-m", *where, "--", "podman", *args]

    def podman(self, *args: str, wd: Path | None = None) -> str:
        """Run `podman ARGS` in Podman's namespace on our storage, in directory `wd` if given (else /); its
        stdout, or OSError with its last error line."""
        proc = subprocess.run(self._argv(args, wd), env=self._env, capture_output=True, text=True, cwd="/")
        return _checked(args[0], proc)

    def popen(self, args: list[str], out: int) -> subprocess.Popen[bytes]:
        """`podman ARGS` started in Podman's namespace, its stdout and stderr to `out`; it dies with us."""
        return subprocess.Popen(
            self._argv(args),
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd="/",
            preexec_fn=namespaces.die_with_parent,  # noqa: PLW1509  one prctl(2) by ctypes: no lock taken
        )

    def _inside(self, path: str) -> Path:
        """A path of Podman's namespace, as this process reaches it."""
        assert self._holder is not None
        return Path(f"/proc/{self._holder.pid}/root{path}")

    # --- layers ------------------------------------------------------------------------

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.check_new(layer_id)
        staging = self.home / "staging" / layer_id
        os.mkdir(staging, 0o755)
        self.lineage.add(layer_id, parent)
        return staging

    def _blob(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (self.home / "oci" / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    def seal_layer(self, layer_id: str) -> None:
        staging = self.home / "staging" / layer_id
        tmp = self.home / "oci" / "blobs" / "sha256" / f".{layer_id}.tar"
        try:
            with open(tmp, "wb") as out:
                digest, size = pack_layer(staging, out, self.opaque_xattr)
            os.replace(tmp, self.home / "oci" / "blobs" / "sha256" / digest.removeprefix("sha256:"))
            parent = self.lineage.parent[layer_id]
            below, diff_ids = self._chain(parent) if parent is not None else ([], [])
            layers = [*below, {"mediaType": _LAYER, "digest": digest, "size": size}]
            diff_ids = [*diff_ids, digest]  # uncompressed: the diff id is the blob's digest
            self._layers[layer_id] = (layers, diff_ids)
            config = {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {"org.layerbench.layer": layer_id}},  # one image per layer id
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created_by": f"layerbench layer {i}"} for i in range(len(diff_ids))],
            }
            c_digest, c_size = self._blob(json.dumps(config).encode())
            manifest = {
                "schemaVersion": 2,
                "mediaType": _MANIFEST,
                "config": {"mediaType": _CONFIG, "digest": c_digest, "size": c_size},
                "layers": layers,
            }
            m_digest, m_size = self._blob(json.dumps(manifest).encode())
            self._index_add(layer_id, {"mediaType": _MANIFEST, "digest": m_digest, "size": m_size})
            policy = str(self.home / "policy.json")
            # Podman 4.3 names an image pulled from `oci:DIR:REF` after DIR as written ("localhost/DIR"), and a
            # work root's path need not be a valid image name ("run-_x", capitals): DIR is relative, from home.
            out_text = self.podman("pull", "-q", "--signature-policy", policy, f"oci:oci:{layer_id}", wd=self.home)
            self._images[layer_id] = out_text.splitlines()[-1]
            # Podman holds the layers now; the staged tars would count a second copy of every layer in the
            # store's disk. A later pull reuses a layer Podman has by its digest and never reads its tar.
            for layer in layers:
                (self.home / "oci" / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")).unlink(
                    missing_ok=True
                )
        finally:
            tmp.unlink(missing_ok=True)
            remove_tree(staging)

    def _index(self) -> dict[str, Any]:
        path = self.home / "oci" / "index.json"
        return json.loads(path.read_text()) if path.exists() else {"schemaVersion": 2, "manifests": []}

    def _index_add(self, ref: str, descriptor: dict[str, Any]) -> None:
        index = self._index()
        key = "org.opencontainers.image.ref.name"
        index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(key) != ref]
        index["manifests"].append({**descriptor, "annotations": {key: ref}})
        (self.home / "oci" / "index.json").write_text(json.dumps(index))

    def _chain(self, layer_id: str) -> tuple[list[dict[str, Any]], list[str]]:
        """The layer descriptors and diff ids of image `layer_id`; a committed image is first pushed
        from Podman's storage into the OCI layout (`podman push`), untimed by nothing: it is the
        cost of building on a committed image, as `podman build` FROM it pays it too."""
        if layer_id not in self._layers:
            self.podman("push", "-q", self._images[layer_id], f"oci:{self.home}/oci:{layer_id}")
            key = "org.opencontainers.image.ref.name"
            (entry,) = [m for m in self._index()["manifests"] if m.get("annotations", {}).get(key) == layer_id]
            blobs = self.home / "oci" / "blobs" / "sha256"
            manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_text())
            config = json.loads((blobs / manifest["config"]["digest"].removeprefix("sha256:")).read_text())
            self._layers[layer_id] = (manifest["layers"], config["rootfs"]["diff_ids"])
        return self._layers[layer_id]

    # --- the engine's own pull and run (run/engine.py) ---------------------------------

    def pull_image(self, reference: str, image_id: str, created: list[str]) -> EnginePulled:
        """`podman pull docker://REFERENCE` (plain HTTP: the harness's registry) as `image_id`, timed alone;
        the layers it made, read from containers-storage's layers.json before and after, are what it fetched."""
        self.lineage.check_new(image_id)
        before = {layer["id"] for layer in self._storage_layers()}
        policy = str(self.home / "policy.json")
        argv = self._argv(["pull", "-q", "--tls-verify=false", "--signature-policy", policy, f"docker://{reference}"])
        t0 = perf_counter_ns()
        proc = subprocess.run(
            argv,
            env=self._env,
            capture_output=True,
            text=True,
            cwd="/",
            preexec_fn=namespaces.die_with_parent,
        )
        t1 = perf_counter_ns()
        self._images[image_id] = _checked("pull", proc).splitlines()[-1]
        self.lineage.add(image_id, None)
        created.append(image_id)
        fetched = {
            str(layer["compressed-diff-digest"]): int(layer["compressed-size"])
            for layer in self._storage_layers()
            if layer["id"] not in before and "compressed-diff-digest" in layer
        }
        return EnginePulled(t1 - t0, fetched)

    def _storage_layers(self) -> list[dict[str, Any]]:
        """containers-storage's record of its image layers (each with the compressed size it read, when pulled)."""
        path = self.home / "root" / f"{self.storage_driver}-layers" / "layers.json"
        try:
            layers = json.loads(path.read_text()) if path.exists() else []
        except ValueError:
            raise OSError(errno.EIO, f"{self.name}: {path.name} is not JSON") from None
        return [layer for layer in layers if isinstance(layer, dict) and "id" in layer]

    def image_files(self) -> Path:
        return self.home / "root" / self.storage_driver  # overlay/<id>/diff, vfs/dir/<id>, btrfs/subvolumes/<id>

    def run_image(
        self, container_id: str, image_id: str, runtime: str, argv: tuple[str, ...], env: tuple[str, ...], cwd: str
    ) -> PodmanContainer:
        if runtime != "crun":
            raise RuntimeError(f"{self.name}: Podman starts containers through crun here, not {runtime!r}")
        self.lineage.check_new(container_id)
        return PodmanContainer(self, container_id, image_id, runtime, argv, env, cwd)

    def made_container(self, container_id: str, image_id: str, create: list[str]) -> None:
        """`podman CREATE... IMAGE` for a run's container (PodmanContainer), then known as an item of the store."""
        self.podman(*create, *_CONTAINER_LIMITS, self._images[image_id])
        self._containers.add(container_id)
        self._ran.add(container_id)
        self.lineage.add(container_id, image_id)

    # --- containers --------------------------------------------------------------------

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self.podman("create", "-q", "--name", container_id, *_CONTAINER_LIMITS, self._images[image], "true")
        self._containers.add(container_id)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        merged = self.podman("mount", container_id)
        self._mounted.add(container_id)
        return self._inside(merged)

    def unmount(self, container_id: str) -> None:
        self.podman("umount", container_id)
        self._mounted.discard(container_id)

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
        image_id = self.podman("commit", "-q", "--pause=false", container_id)
        self._images[layer_id] = image_id.splitlines()[-1]
        self.lineage.add_commit(layer_id, container_id)  # the layer's parent: the container's image

    def remove(self, item_id: str) -> None:
        if item_id not in self.lineage:
            raise FileNotFoundError(errno.ENOENT, f"{self.name}: no such item {item_id!r}")
        self.lineage.check_removable(item_id)
        if item_id in self._containers:
            self.podman("rm", *(["-f"] if item_id in self._ran else []), item_id)  # a run's may not be reaped yet
            self._containers.discard(item_id)
            self._ran.discard(item_id)
        elif item_id in self._images:
            podman_id = self._images.pop(item_id)
            if podman_id not in self._images.values():  # the same image pulled twice is two items, one image
                self.podman("rmi", "--no-prune", podman_id)  # not the untagged parent images too
        else:  # a layer created and never sealed
            remove_tree(self.home / "staging" / item_id)
        self._layers.pop(item_id, None)
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        ref = item_id if item_id in self._containers else self._images[item_id]
        (info,) = json.loads(self.podman("inspect", "--format", "json", ref))
        data = {k: str(v) for k, v in (info.get("GraphDriver", {}).get("Data") or {}).items()}
        data["GraphDriver"] = str(info.get("GraphDriver", {}).get("Name", ""))
        data["Id"] = str(info.get("Id", ""))
        return data

    def close(self) -> None:
        if not hasattr(self, "_mounted"):
            return  # never set up
        try:
            if self._holder is not None and self._holder.poll() is None:
                for cid in list(self._containers):
                    try:
                        self.podman("rm", "-f", cid)
                    except OSError:
                        pass
                try:
                    self.podman("rmi", "-a", "-f")  # btrfs: subvolumes go by Podman, not by a tree walk
                except OSError:
                    pass
        finally:
            self._containers.clear()
            self._mounted.clear()
            self._stop_holder()
            if self.home.exists():
                for child in self.home.iterdir():
                    remove_tree(child)


class PodmanOverlay(PodmanDriver):
    """Podman on containers-storage's overlay driver (kernel overlayfs, `l/` links as Docker's)."""

    name = "podman/overlay"
    style = Style.UNION
    storage_driver = "overlay"
    kernel_fs = "overlay"
    root_mode = 0o555  # containers-storage overlay: a base layer's diff dir is made 0555, children copy it
    backings = ("ext4", "xfs", "btrfs")
    mechanism = "overlay2"


class PodmanVfs(PodmanDriver):
    """Podman on containers-storage's vfs driver (a full copy per layer and container)."""

    name = "podman/vfs"
    style = Style.COPY
    storage_driver = "vfs"
    backings = ("ext4", "xfs", "btrfs")
    mechanism = "vfs"


class PodmanBtrfs(PodmanDriver):
    """Podman on containers-storage's btrfs driver (a subvolume per layer, snapshots for children)."""

    name = "podman/btrfs"
    style = Style.SNAPSHOT
    storage_driver = "btrfs"
    kernel_fs = "btrfs"
    backings = ("btrfs",)
    mechanism = "btrfs"


@functools.cache
def _podman_version() -> str:
    if shutil.which("podman") is None:
        return "not installed"
    out = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.split()
    return out[-1] if out else "?"


def _checked(command: str, proc: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout, or OSError with its last error line."""
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"]
        code = errno.ENOENT if "no such" in lines[-1].lower() else errno.EIO
        raise OSError(code, f"podman {command}: {lines[-1]}")
    return proc.stdout.strip()
