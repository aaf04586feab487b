"""A container of the `run` step on a containerd driver (run/engine.py's EngineContainer): containerd's records
and snapshot, mounted as its shim would mount them, started by crun as the harness's own crun cells are.

- `make` (create_ns) is what containerd's client does for `ctr run` / `ctr containers create`
  (its NewContainer with WithNewSnapshot): Snapshots.Prepare of an active snapshot on the
  image's chain id, then Containers.Create of the container's record (its image, the OCI
  spec of the bundle crun runs, its snapshotter and snapshot key), through our gRPC client.
- `create` (runtime_ns) is what a task's start does before the process runs: Snapshots.Mounts
  of that snapshot (the rootfs the client hands the task service), those mounts mounted as
  containerd's shim mounts them (drivers/_containerd_mounts.py), then
  `crun create` (run/runtime.py's CrunContainer: namespaces, pivot_root, the process waiting
  to exec). containerd's own task service is not used: it starts a shim that puts every
  container in a cgroup (crun and the shims refuse this machine's hybrid cgroup hierarchy,
  and cgroups belong to the machine), so our daemon runs without it (containerd_daemon.py)
  and the harness's cgroup-free crun stands where the shim's runtime call would be.
- `begin` is `crun start`; `stop` kills the process, deletes it from crun and ends crun's
  holder. The driver's `remove` then deletes the record and the snapshot.

The mount is made in the holder's private mount namespace (where crun runs, with its empty
tmpfs over /sys/fs/cgroup), not in the machine's: a thread of ours, started before the clock,
leaves the process's shared filesystem context (unshare CLONE_FS) and joins that namespace
(setns), then waits; `create` hands it the mounts and it makes them with mount(2) (nodev,
nosuid, as every mount layerbench makes; crun's bind of the root is remounted so by its
createContainer hook). The thread ends once it has mounted, so the namespace, and the mount
with it, ends with the holder: after `stop`, and after a SIGKILL of the run, when `cleanup`
stops the holder (a `daemon` of the ledger; the mount point is written there too, before).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import TYPE_CHECKING

from layerbench.kernel import namespaces
from layerbench.run.ledger import Ledger
from layerbench.run.runtime import CrunContainer

from ._common import remove_tree
from ._containerd_mounts import Allowed, mount_specs

if TYPE_CHECKING:
    from .containerd_api import MountSpec
    from .containerd_snapshotter import ContainerdSnapshotterDriver

__all__ = ["ContainerdContainer", "valid_identifier"]

_CLONE_FS = 0x00000200
#: containerd's identifiers (pkg/identifiers): what a container id and a snapshot key of ours must be
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_IDENTIFIER_MAX = 76


def valid_identifier(name: str) -> bool:
    """Whether `name` is a containerd identifier (a container's id)."""
    return len(name) <= _IDENTIFIER_MAX and _IDENTIFIER.fullmatch(name) is not None


class _MounterThread:
    """A thread in the mount namespace of process `holder`: `mount` has it mount `specs` on `target` there."""

    def __init__(self, holder: int, target: str, allowed: Allowed) -> None:
        self.target, self.allowed = target, allowed
        self._ns = os.open(f"/proc/{holder}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self._joined, self._go, self._done = threading.Event(), threading.Event(), threading.Event()
        self._specs: list[MountSpec] | None = None
        self._error: BaseException | None = None
        self.how = ""  # how the mount was made (mount_specs' answer)
        self._thread = threading.Thread(target=self._run, name=f"mount {target}", daemon=True)
        self._thread.start()
        self._joined.wait()
        if self._error is not None:
            self.close()
            raise OSError(f"containerd: joining crun's mount namespace failed: {self._error}")

    def _run(self) -> None:
        try:
            namespaces.unshare(_CLONE_FS)  # this thread alone: setns(CLONE_NEWNS) refuses a shared fs context
            namespaces.setns(self._ns, namespaces.CLONE_NEWNS)
        except OSError as exc:
            self._error = exc
            return
        finally:
            self._joined.set()
        self._go.wait()
        if self._specs is None:
            return  # closed before `mount`
        try:
            self.how = mount_specs(self._specs, self.target, self.allowed)
        except BaseException as exc:  # noqa: BLE001  handed to the caller, which raises it
            self._error = exc
        finally:
            self._done.set()

    def mount(self, specs: list[MountSpec]) -> None:
        """Mount `specs` on the target in the namespace (timed by the caller: the hand-off and mount(2))."""
        self._specs = specs
        self._go.set()
        self._done.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Let the thread end (it leaves the namespace with it); idempotent."""
        self._go.set()
        if self._thread.ident is not None:
            self._thread.join()
        if self._ns >= 0:
            os.close(self._ns)
            self._ns = -1


class ContainerdContainer:
    """One container of a containerd driver: containerd's snapshot and record, our mount, crun (module docstring)."""

    def __init__(
        self,
        driver: ContainerdSnapshotterDriver,
        name: str,
        image: str,
        argv: tuple[str, ...],
        env: tuple[str, ...],
        cwd: str,
    ) -> None:
        """The root's mount point, crun's bundle and holder, and the mounting thread (all before the clock)."""
        self.driver, self.name, self.image = driver, name, image
        self.target = driver.home / "rootfs" / name
        self.pid, self.pidfd = 0, -1
        self._box: CrunContainer | None = None
        self._mounter: _MounterThread | None = None
        self._noted = False
        self._crun_dir = driver.home / "crun"
        os.mkdir(self.target, 0o755)
        try:
            ledger = driver.ledger if isinstance(driver.ledger, Ledger) else None
            self._box = CrunContainer(name, self.target, argv, env, cwd, self._crun_dir, ledger, mounted_later=True)
            self.spec = (self._box.bundle / "config.json").read_bytes()  # the record's spec is the one crun runs
            if driver.ledger is not None:
                driver.ledger.made("mount", self.target)
            self._noted = True
            self._mounter = _MounterThread(self._box.holder.pid, str(self.target), driver.allowed)
        except BaseException:
            self.stop()
            raise

    @property
    def output(self) -> int:
        assert self._box is not None
        return self._box.output

    @property
    def mounted_via(self) -> str:
        """How the root was mounted ("mount(2)", "fsconfig", "bind", "btrfs" ...), once `create` has run."""
        return self._mounter.how if self._mounter is not None else ""

    def make(self) -> None:
        """Snapshots.Prepare on the image's chain id, Containers.Create (timed: create_ns)."""
        self.driver.made_container(self.name, self.image, self.spec)

    def create(self) -> None:
        """Snapshots.Mounts, those mounts made in crun's namespace, `crun create` (timed: runtime_ns)."""
        assert self._box is not None and self._mounter is not None
        self._mounter.mount(self.driver.api.mounts(self.driver.snapshotter, self.name))
        self._box.create()
        self.pid, self.pidfd = self._box.pid, self._box.pidfd

    def noted(self) -> None:
        """Nothing: crun's process is in the ledger already (CrunContainer.create)."""

    def begin(self) -> None:
        """`crun start`: the waiting process execs the entrypoint."""
        assert self._box is not None
        self._box.begin()

    def exit_status(self) -> int | None:
        return None  # the process is not our child; its output says how it ended

    def stop(self) -> None:
        """The mounting thread ended, the process killed, crun's state deleted, its holder (and with its
        namespace, the root's mount) ended; the mount point and bundle removed. After errors too."""
        try:
            if self._mounter is not None:
                self._mounter.close()
        finally:
            try:
                if self._box is not None:
                    self._box.stop()
            finally:
                if self._noted and self.driver.ledger is not None:
                    self.driver.ledger.released("mount", self.target)
                self._noted = False
                self.pidfd = -1
                if self._box is not None:
                    remove_tree(self._box.bundle)
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(self.target)  # a plain directory here: the mount was in crun's namespace
