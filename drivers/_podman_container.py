"""A container of the `run` step started by Podman itself (run/engine.py's EngineContainer).

`make` is `podman create` (the container's record and layer), `create` is `podman init`
(the mount, conmon, and the OCI runtime's create: the process waits to exec), `begin` is
`podman start --attach` (the exec; the container's output reaches us through Podman's
attach, as a `podman run` user sees it: the ready wait's pidfd is that client's, which
ends after the last of the output, not the process's, whose output may still be on its
way through conmon when it exits). All in the driver's private mount namespace,
with `--cgroups=disabled`, the ulimits and `--network none` (loopback only). conmon and the
container's process are not our children: they are written in the ledger as `daemon`s
once `podman init` has made them (both carry the run's tag: conmon by containers.conf's
`conmon_env_vars`, the process by `--env`), so `cleanup` ends them after a SIGKILL; every
`podman` command we start dies with us (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from layerbench.kernel import namespaces
from layerbench.run.ledger import TAG, daemon_id

from ._common import remove_tree

if TYPE_CHECKING:
    from .podman import PodmanDriver

__all__ = ["PodmanContainer"]

_STOP_WAIT_S = 10.0


class PodmanContainer:
    """One container through `podman create`, `init`, `start --attach`; `stop` kills and forgets it
    (the driver's `remove` is `podman rm -f`)."""

    def __init__(
        self,
        driver: PodmanDriver,
        name: str,
        image: str,
        runtime: str,
        argv: tuple[str, ...],
        env: tuple[str, ...],
        cwd: str,
    ) -> None:
        self.driver, self.name, self.image = driver, name, image
        self.files = driver.home / "containers" / name  # the pid files Podman writes
        tag = (f"{TAG}={os.environ[TAG]}",) if TAG in os.environ else ()  # the run's ledger (run/ledger.py)
        self._create = ["create", "-q", "--name", name, "--runtime", runtime, "--network", "none"]
        self._create += ["--pidfile", str(self.files / "pid"), "--conmon-pidfile", str(self.files / "conmon.pid")]
        self._create += ["--entrypoint", json.dumps(list(argv))]
        for e in (*env, *tag):
            self._create += ["--env", e]
        if cwd:
            self._create += ["--workdir", cwd]
        self.pid = 0  # the container's process, as the host sees it
        self._pid_fd = -1
        self.pidfd = -1  # the attached client's: it ends after passing on all the output (run/ready.py waits on it)
        self._conmon_fd = -1
        self._noted: list[str] = []
        self._client: subprocess.Popen[bytes] | None = None
        self._out_r, self._out_w = os.pipe()
        os.set_blocking(self._out_r, False)
        os.makedirs(self.files, 0o700)  # for the pid files, before the clock

    @property
    def output(self) -> int:
        return self._out_r

    def make(self) -> None:
        """`podman create` (timed: create_ns)."""
        self.driver.made_container(self.name, self.image, self._create)

    def create(self) -> None:
        """`podman init`: mounted, conmon running, the process created and waiting to exec (timed: runtime_ns)."""
        self.driver.podman("init", self.name)

    def noted(self) -> None:
        """Untimed: the process and conmon, pinned by pidfds and written in the ledger."""
        self.pid = int((self.files / "pid").read_text())
        self._pid_fd = namespaces.pidfd_open(self.pid)
        conmon = int((self.files / "conmon.pid").read_text())
        self._conmon_fd = namespaces.pidfd_open(conmon)
        for pid in (conmon, self.pid):
            self._noted.append(daemon_id(pid))
            if self.driver.ledger is not None:
                self.driver.ledger.made("daemon", self._noted[-1])

    def begin(self) -> None:
        """`podman start --attach`: the process execs; its output comes through Podman's attach."""
        self._client = self.driver.popen(["start", "--attach", self.name], self._out_w)
        self.pidfd = namespaces.pidfd_open(self._client.pid)
        os.close(self._out_w)  # the client's copy is the last: EOF when it ends
        self._out_w = -1

    def exit_status(self) -> int | None:
        """The process's status as `podman start --attach` returns it, if the client has ended already."""
        return self._client.poll() if self._client is not None else None

    def stop(self) -> None:
        """SIGKILL the process (its pid namespace goes with it), wait for the client and conmon to end."""
        try:
            if self._pid_fd >= 0:
                try:
                    signal.pidfd_send_signal(self._pid_fd, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it has exited already
                _wait_fd(self._pid_fd, _STOP_WAIT_S)
            if self._client is not None:
                try:
                    self._client.wait(timeout=_STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    self._client.kill()
                    self._client.wait()
            if self._conmon_fd >= 0:
                _wait_fd(self._conmon_fd, _STOP_WAIT_S)
        finally:
            for fd in (self._out_r, self._out_w, self.pidfd, self._pid_fd, self._conmon_fd):
                if fd >= 0:
                    os.close(fd)
            self._out_r = self._out_w = self.pidfd = self._pid_fd = self._conmon_fd = -1
            if self.driver.ledger is not None:
                for noted in reversed(self._noted):
                    self.driver.ledger.released("daemon", noted)
            self._noted = []
            remove_tree(self.files)


def _wait_fd(fd: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            return
