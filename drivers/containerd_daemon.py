"""containerd itself (Debian's package), started on a root of ours and stopped after: a service owning its whole life.

    <dir>/config.toml       our config: root, state and socket below <dir>; CRI, tasks, runtimes,
                            the cgroups monitor, restart and /opt plugins disabled (no cgroup is touched)
    <dir>/root              containerd's root: metadata.db, content store, each snapshotter's root
    <dir>/state/c.sock      the gRPC socket
    <dir>/containerd.log    the daemon's output (its last line names a failed start)

The daemon is written in the run's ledger (kind `daemon`, `<pid>:<start time>`) before
it runs: a shell holds the process until then, and `exec`s containerd under the same
pid; `layerbench cleanup` stops the daemon of a run that died, never a recycled pid.
A socket path longer than a unix address takes is reached through `/proc/self/fd/N/`
of the state directory, held open here and handed to the daemon under the same number.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from layerbench.driver import ResourceNotes
from layerbench.run.ledger import daemon_id

from ._common import toml_string
from .containerd_api import connect_path

__all__ = ["ContainerdDaemon", "config_text"]

#: plugins our daemon never loads: container runtimes and tasks (they would touch cgroups), the
#: CRI, restart, /opt/containerd (outside our root), and snapshotters that need their own set-up
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.internal.v1.restart",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)
_START_TIMEOUT_S = 30.0
_STOP_GRACE_S = 10.0


def config_text(root: Path, state: Path, address: str) -> str:
    """containerd's config (version 2) for a daemon of ours."""
    disabled = ", ".join(toml_string(p) for p in DISABLED_PLUGINS)
    return (
        "version = 2\n"
        f"root = {toml_string(str(root))}\n"
        f"state = {toml_string(str(state))}\n"
        "oom_score = 0\n"
        f"disabled_plugins = [{disabled}]\n"
        f"[grpc]\n  address = {toml_string(address)}\n"
        f"[ttrpc]\n  address = {toml_string(address + '.ttrpc')}\n"
        '[debug]\n  address = ""\n'
        '[metrics]\n  address = ""\n'
    )


class ContainerdDaemon:
    """containerd on `<dir>`: `start` returns the address to connect to; `stop` ends it. A context manager."""

    def __init__(self, directory: Path, ledger: ResourceNotes | None = None, binary: str = "containerd") -> None:
        self.dir, self.ledger, self.binary = directory, ledger, binary
        self.ident = ""  # the daemon as the ledger names it
        self.log = directory / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._state_fd: int | None = None
        self.address = ""

    @staticmethod
    def version() -> str:
        """`containerd --version`'s version field, or why it has none."""
        if shutil.which("containerd") is None:
            return "not installed"
        out = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.split()
        return out[2] if len(out) > 2 else "?"

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The descriptor a client must inherit (same number) to reach `address` through /proc/self/fd."""
        return (self._state_fd,) if self._state_fd is not None and self.address.startswith("/proc/self/fd/") else ()

    def start(self) -> str:
        root, state = self.dir / "root", self.dir / "state"
        root.mkdir(mode=0o700, exist_ok=True)
        state.mkdir(mode=0o700, exist_ok=True)
        self._state_fd = os.open(state, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # containerd makes <socket>.ttrpc beside it too, and refuses a socket path over 104 bytes
        self.address = connect_path(str(state / "c.sock"), self._state_fd, limit=104 - len(".ttrpc"))
        config = self.dir / "config.toml"
        config.write_text(config_text(root, state, self.address))
        argv = [self.binary, "--config", str(config), "--log-level", "warn"]
        with open(self.log, "wb") as log:
            # `read` holds the process until the ledger has its pid; then `exec` makes it containerd (same pid)
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", 'read -r _ && exec "$@"', "layerbench-containerd", *argv],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(self._state_fd,),
                start_new_session=True,  # a Ctrl-C of the run reaches the harness, which stops it in order
            )
        self.ident = daemon_id(self._proc.pid)
        if self.ledger is not None:
            self.ledger.made("daemon", self.ident)
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"go\n")
        self._proc.stdin.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not os.path.exists(state / "c.sock"):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                self.stop()
                raise OSError(f"containerd did not start ({self.binary}): {tail[0]}")
            time.sleep(0.01)
        return self.address

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after a grace) and forget it; idempotent."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
            if self.ledger is not None:
                self.ledger.released("daemon", self.ident)
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
