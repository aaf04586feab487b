"""Container runtimes: how the `run` step starts an image's process on the driver's mount.

Two, a cell dimension (the `run` step's `runtime`):

- `crun` (Debian's crun, an OCI runtime): an OCI bundle whose `root.path` is the driver's
  mount, `crun create` then `crun start`. crun runs with `--cgroup-manager=disabled`
  inside a private mount namespace whose /sys/fs/cgroup is an empty tmpfs (crun refuses a
  hybrid v1/v2 hierarchy before it reads that option): a *holder* process made with
  unshare(1) keeps that namespace, and each crun command joins it (setns in the child
  before exec). No cgroup is created, changed or joined. The state directory (`--root`)
  is under the cell's store. The commands are the mechanism: `runtime_ns` holds
  `crun create`'s process, `ready_ns` `crun start`'s.
- `builtin` (harness/run/launcher.py): the same namespaces and mounts by syscalls, for a
  machine without crun.

Both: new mount, pid, ipc, uts and network namespaces (loopback only); the root is the
driver's mount, `nodev,nosuid` as every mount layerbench makes; /proc, a /dev tmpfs with
the usual devices, /dev/shm. A rootless cell (overlay2-rootless) starts it inside its
user namespace, as rootless Podman does (its image pulled in there too, from registries
started as root outside: run/steps.start_registries). fuse-overlayfs cells run as root
in layerbench (that driver has no user namespace of its own, `userns = False`), so their
containers start as root, as overlay2's do. Each sample's first `run` step says which, from
the container's own /proc files, as an outcome (`seen_from_inside`):
`container root: overlay (nodev,nosuid), uid 0 = host uid 100000`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from layerbench.kernel import mountinfo, namespaces
from layerbench.run.launcher import BuiltinContainer
from layerbench.run.ledger import TAG, Ledger, daemon_id, untagged

__all__ = [
    "RUNTIMES",
    "Container",
    "CrunContainer",
    "unavailable",
    "default_runtime",
    "container",
    "versions",
    "seen_from_inside",
]

RUNTIMES = ("crun", "builtin")
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CAPS = [  # Docker's default set
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
#: the holder: a private mount namespace, an empty tmpfs over /sys/fs/cgroup, the root ($1) a mount of its
#: own (a driver's plain directory too) nodev,nosuid, then nothing but waiting
_HOLDER = (
    "mount -t tmpfs -o nodev,nosuid,noexec,size=4k,mode=0555 cgroup-free /sys/fs/cgroup "
    '&& mount --bind "$1" "$1" && mount -o remount,bind,nosuid,nodev "$1" '
    "&& echo ok && exec sleep 2147483647"
)
#: the holder of a root its caller mounts in the holder's namespace afterwards (CrunContainer's `mounted_later`):
#: no bind of the root (a mount of the same filesystem onto the root of a mount of it is refused: EBUSY)
_HOLDER_MOUNTED_LATER = (
    "mount -t tmpfs -o nodev,nosuid,noexec,size=4k,mode=0555 cgroup-free /sys/fs/cgroup "
    "&& echo ok && exec sleep 2147483647"
)
_STOP_WAIT_S = 10.0
_SH = shutil.which("sh") or "/bin/sh"
_REMOUNT = 'cat >/dev/null; exec mount -o remount,bind,nosuid,nodev "$1"'


class Container(Protocol):
    """A container of the `run` step: made (`create`, timed as runtime_ns), its process let run
    (`begin`), stopped and removed (`stop`, after errors too)."""

    pid: int
    pidfd: int

    @property
    def output(self) -> int: ...

    def create(self) -> None: ...

    def begin(self) -> None: ...

    def exit_status(self) -> int | None: ...

    def stop(self) -> None: ...


def unavailable(runtime: str) -> str | None:
    """None when `runtime` can start containers here, else why not."""
    if runtime == "crun":
        if shutil.which("crun") is None:
            return "crun is not installed (apt-get install crun; or runtime = 'builtin')"
        if shutil.which("unshare") is None:
            return "unshare(1) (util-linux) is not installed: crun needs it for its cgroup-free mount namespace"
        return None
    if runtime == "builtin":
        return None
    return f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}"


def default_runtime() -> str:
    """crun where it can run, else the built-in launcher."""
    return "crun" if unavailable("crun") is None else "builtin"


def versions() -> dict[str, str]:
    """The runtimes' versions, for the machine description."""
    if shutil.which("crun") is None:
        return {}
    out = subprocess.run(["crun", "--version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return {"crun": out.removeprefix("crun version ").strip()}


def bundle_config(root: Path, argv: tuple[str, ...], env: tuple[str, ...], cwd: str) -> dict[str, Any]:
    """The OCI runtime config (config.json) of a container whose root is `root`."""
    envs = list(env) if any(e.startswith("PATH=") for e in env) else [_PATH, *env]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(argv),
            "env": envs,
            "cwd": cwd or "/",
            "noNewPrivileges": True,
            "capabilities": {k: _CAPS for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "root": {"path": str(root), "readonly": False},
        "hostname": "layerbench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
        ],
        # crun binds `root.path` without the driver mount's nodev,nosuid: a createContainer hook (in the
        # container's mount namespace, before pivot_root) remounts that bind nodev,nosuid again
        "hooks": {
            "createContainer": [
                # crun writes the container's state to a hook's stdin: read it, or crun may get EPIPE
                {"path": _SH, "args": ["sh", "-c", _REMOUNT, "hook", str(root)]},
            ]
        },
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


class CrunContainer:
    """One container through crun, in a cgroup-free mount namespace its holder keeps."""

    def __init__(
        self,
        name: str,
        root: Path,
        argv: tuple[str, ...],
        env: tuple[str, ...],
        cwd: str,
        workdir: Path,
        ledger: Ledger | None = None,
        *,
        mounted_later: bool = False,
    ) -> None:
        """Write the bundle and start the holder (both before the clock). With `mounted_later`, the caller
        mounts the root (nodev,nosuid) in the holder's namespace itself before `create` (drivers/
        _containerd_container.py); else the holder makes the root a nodev,nosuid mount of its own."""
        self.name, self.ledger = name, ledger
        self.bundle = workdir / name
        self.state = workdir / "crun"
        self.bundle.mkdir(mode=0o700)
        self.state.mkdir(mode=0o700, exist_ok=True)
        env = untagged(env)  # the image's own tag, if it names one, is not the run's
        if ledger is not None:  # cleanup kills only a process that carries its run's ledger (run/ledger.py)
            env = (*env, f"{TAG}={os.path.abspath(ledger.path)}")
        config = bundle_config(root, argv, env, cwd)
        config["annotations"] = {"run.oci.hooks.stderr": str(self.bundle / "hooks.err")}  # for crun's error
        (self.bundle / "config.json").write_text(json.dumps(config))
        self.pidfile = self.bundle / "pid"
        self.pid = 0
        self.pidfd = -1
        self._noted: list[str] = []
        self._created = False
        self._out_r, self._out_w = os.pipe()
        os.set_blocking(self._out_r, False)
        self.holder = subprocess.Popen(
            [
                *("unshare", "--mount", "--propagation", "private", "--", "sh", "-c"),
                _HOLDER_MOUNTED_LATER if mounted_later else _HOLDER,
                *("holder", str(root)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=namespaces.die_with_parent,  # noqa: PLW1509  one prctl(2) by ctypes: no lock taken
        )
        self._note(self.holder.pid)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != b"ok":
            self.holder.wait()
            err = self.holder.stderr.read().decode(errors="replace").strip() if self.holder.stderr else ""
            self._release_holder()
            raise RuntimeError(f"crun: the cgroup-free mount namespace could not be made: {err}")
        self._mnt = os.open(f"/proc/{self.holder.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self._argv = ["crun", "--root", str(self.state), "--cgroup-manager=disabled"]

    @property
    def output(self) -> int:
        return self._out_r

    def _join(self) -> None:  # pragma: no cover  (in the forked child, before exec)
        namespaces.setns(self._mnt, namespaces.CLONE_NEWNS)
        namespaces.die_with_parent()

    def _crun(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*self._argv, *args],
            stdin=subprocess.DEVNULL,
            stdout=self._out_w,
            stderr=self._out_w,
            pass_fds=(self._mnt,),
            preexec_fn=self._join,  # noqa: PLW1509  setns(2) and prctl(2) by ctypes: no lock taken
        )

    def _drain(self) -> str:
        chunks = []
        while True:
            try:
                chunk = os.read(self._out_r, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").strip()

    def create(self) -> None:
        """`crun create`: namespaces, mounts, pivot_root; its process waits to exec (timed: runtime_ns)."""
        proc = self._crun("create", "--bundle", str(self.bundle), "--pid-file", str(self.pidfile), self.name)
        code = proc.wait()
        self._created = True
        if code != 0:
            hooks = self.bundle / "hooks.err"
            said = hooks.read_text(errors="replace").strip() if hooks.exists() else ""
            raise RuntimeError(f"crun create failed ({code}): {self._drain()[-400:]} {said[-200:]}".strip())
        self.pid = int(self.pidfile.read_text())
        self.pidfd = namespaces.pidfd_open(self.pid)  # now: it may exit as soon as it runs
        self._note(self.pid)

    def begin(self) -> None:
        """`crun start`: the waiting process execs the entrypoint."""
        proc = self._crun("start", self.name)
        os.close(self._out_w)  # the container's copy is the last: EOF when it ends
        self._out_w = -1
        if proc.wait() != 0:
            raise RuntimeError(f"crun start failed: {self._drain()[-400:]}")

    def exit_status(self) -> int | None:
        return None  # the container's process is not our child; its output says how it ended

    def stop(self) -> None:
        """Kill the container (SIGKILL to its pid 1 ends its pid namespace), `crun delete`, end the holder."""
        try:
            if self.pidfd >= 0:  # pinned: the pid cannot name another process
                with contextlib.suppress(ProcessLookupError):  # it ended on its own (an entrypoint that exits)
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                _wait_fd(self.pidfd, _STOP_WAIT_S)
            if self._created and self.holder.poll() is None:
                self._crun("delete", "--force", self.name).wait()
        finally:
            self._release_holder()
            for fd in (self._out_r, self._out_w, self.pidfd):
                if fd >= 0:
                    os.close(fd)
            self._out_r = self._out_w = self.pidfd = -1
            if self.ledger is not None:
                for noted in self._noted:
                    self.ledger.released("daemon", noted)
            self._noted = []

    def _release_holder(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()
        for stream in (self.holder.stdout, self.holder.stderr):
            if stream is not None:
                stream.close()
        if getattr(self, "_mnt", -1) >= 0:
            os.close(self._mnt)
            self._mnt = -1

    def _note(self, pid: int) -> None:
        if self.ledger is not None:
            self._noted.append(daemon_id(pid))
            self.ledger.made("daemon", self._noted[-1])


def seen_from_inside(pid: int) -> str:
    """What a created container's process (`pid`, not yet exec'd) runs on, from its own /proc files: its
    root's filesystem type and whether that mount is nodev,nosuid, and the host uid its uid 0 is (not 0:
    a user namespace). `container root: overlay (nodev,nosuid), uid 0 = host uid 100000`."""
    try:
        root = [m for m in mountinfo.mounts(pid) if m.point == "/"][-1]
        with open(f"/proc/{pid}/uid_map") as f:
            first = f.readline().split()
        host = int(first[1]) if first and first[0] == "0" else None
    except (OSError, IndexError, ValueError) as exc:
        return f"container root: unreadable from outside ({type(exc).__name__})"
    safe = "nodev,nosuid" if root.has("nodev", "nosuid") else "NOT nodev,nosuid"
    user = "uid 0 unmapped" if host is None else f"uid 0 = host uid {host}"
    return f"container root: {root.fstype} ({safe}), {user}"


def _wait_fd(fd: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            return


def container(
    runtime: str,
    name: str,
    root: Path,
    argv: tuple[str, ...],
    env: tuple[str, ...],
    cwd: str,
    workdir: Path,
    ledger: Ledger | None = None,
) -> Container:
    """A container of `runtime` on `root`, prepared (bundle, holder) but not yet created."""
    if (why := unavailable(runtime)) is not None:
        raise RuntimeError(why)
    cls = CrunContainer if runtime == "crun" else BuiltinContainer
    return cls(name, root, argv, env, cwd, workdir, ledger)
