"""The built-in container launcher: the runtime `builtin`, for machines without crun.

It starts the image's process as a runtime does, so the read path is the same:
a forked child leaves the host's mount, pid, ipc, uts and network namespaces; its own
child (pid 1 of the new pid namespace) bind-mounts the container's root (the driver's
mount), mounts /proc, a /dev tmpfs with the usual device nodes bound in and /dev/shm,
brings up loopback (the only network), pivot_root()s into the root, drops the old
one, and waits. `begin()` lets it execve the entrypoint. Nothing touches a cgroup.

Both children die with their parent (PR_SET_PDEATHSIG), so a killed harness leaves
no container behind; the pid namespace ends with its pid 1.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import traceback
from pathlib import Path

from layerbench.kernel import namespaces, syscalls
from layerbench.run.ledger import Ledger, daemon_id, untagged

__all__ = ["BuiltinContainer"]

_MS_REC, _MS_PRIVATE, _MS_NOEXEC = 16384, 1 << 18, 8
_STOP_WAIT_S = 10.0  # a SIGKILLed pid 1 ends in milliseconds; the launcher is killed after, whatever happened
_CTL_WAIT_S = 60.0  # the launcher's set-up is milliseconds: a minute without a word is a failure
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_NAMESPACES = (
    namespaces.CLONE_NEWNS
    | namespaces.CLONE_NEWPID
    | namespaces.CLONE_NEWIPC
    | namespaces.CLONE_NEWUTS
    | namespaces.CLONE_NEWNET
)


def _mkdir(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _enter(root: str, cwd: str, hostname: str) -> None:
    """In pid 1 of the new namespaces: the container's mounts, then pivot_root into its root."""
    syscalls.mount(root, root, "", syscalls.MS_BIND | _MS_REC)
    _mkdir(f"{root}/proc")
    syscalls.mount("proc", f"{root}/proc", "proc", _MS_NOEXEC)
    _mkdir(f"{root}/dev")
    syscalls._mount("tmpfs", f"{root}/dev", "tmpfs", syscalls.MS_NOSUID | _MS_NOEXEC, "mode=755,size=65536k")
    for dev in _DEVICES:
        target = f"{root}/dev/{dev}"
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
        syscalls._mount(f"/dev/{dev}", target, "", syscalls.MS_BIND, "")  # the device's own mount flags
    _mkdir(f"{root}/dev/shm")
    syscalls.mount("shm", f"{root}/dev/shm", "tmpfs", _MS_NOEXEC, "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        os.symlink(target, f"{root}/dev/{name}")
    os.symlink("/proc/self/fd/2", f"{root}/dev/stderr")
    socket.sethostname(hostname)
    namespaces.loopback_up()
    os.chdir(root)
    namespaces.pivot_root(".", ".")  # the old root is stacked under the new one: detach it
    syscalls.umount(".", syscalls.MNT_DETACH)
    os.chdir("/")
    try:
        os.chdir(cwd)
    except OSError:
        pass  # a missing WorkingDir: Docker makes it; the process starts in / here


class BuiltinContainer:
    """One container started by the built-in launcher: `create` (namespaces, mounts, pivot_root),
    `begin` (execve), `stop` (SIGKILL to its pid 1, which ends the pid namespace)."""

    def __init__(
        self,
        name: str,
        root: Path,
        argv: tuple[str, ...],
        env: tuple[str, ...],
        cwd: str,
        workdir: Path,
        ledger: Ledger | None = None,
    ) -> None:
        self.name, self.root, self.argv, self.env, self.cwd = name, root, argv, untagged(env), cwd  # run/ledger.py
        self.ledger = ledger
        self._out_r, self._out_w = os.pipe()
        os.set_blocking(self._out_r, False)
        self._ctl_buf = b""
        self._ctl_r, self._ctl_w = os.pipe()  # child -> harness: its pid 1, then "prepared" or an error
        self._go_r, self._go_w = os.pipe()  # harness -> child: execve now
        self._outer: int | None = None  # the forked child, outside the new pid namespace
        self._noted: str | None = None
        self.pid = 0  # pid 1 of the container, as the host sees it
        self.pidfd = -1
        self._status: int | None = None

    @property
    def output(self) -> int:
        return self._out_r

    def create(self) -> None:
        """Fork, unshare, mount and pivot_root; return when the process waits to execve."""
        env = dict(e.split("=", 1) for e in self.env if "=" in e)
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        outer = os.fork()
        if outer == 0:
            self._outer_child(env)
        self._outer = outer
        os.close(self._ctl_w)
        os.close(self._go_r)
        os.close(self._out_w)
        self._note(outer)
        # the outer child's "pid N" and the inner child's "prepared" come in either order
        pid, prepared = None, False
        while pid is None or not prepared:
            reply = self._read_ctl()
            if reply.startswith("pid ") and pid is None:
                pid = int(reply.split()[1])
                self.pid = pid
                self.pidfd = namespaces.pidfd_open(pid)  # now: it may exit as soon as it runs
            elif reply == "prepared":
                prepared = True
            else:
                raise RuntimeError(f"builtin runtime: {reply or self._died()}")

    def _died(self) -> str:
        """How the launcher ended, when it said nothing (killed first if it still runs: a silent one)."""
        if self._outer is not None:
            try:
                os.kill(self._outer, signal.SIGKILL)
            except ProcessLookupError:
                pass
        status = self.exit_status()
        how = f"signal {-status}" if status is not None and status < 0 else f"status {status}"
        return f"the launcher ended ({how}) before it was ready"

    def _read_ctl(self) -> str:
        """One line from the launcher; "" if it ends, or says nothing within _CTL_WAIT_S (never a hang)."""
        while b"\n" not in self._ctl_buf:
            if not select.select([self._ctl_r], [], [], _CTL_WAIT_S)[0]:
                break
            chunk = os.read(self._ctl_r, 4096)
            if not chunk:
                break
            self._ctl_buf += chunk
        line, _, self._ctl_buf = self._ctl_buf.partition(b"\n")
        return line.decode(errors="replace").strip()

    def _outer_child(self, env: dict[str, str]) -> None:  # pragma: no cover  (a forked child)
        code = 1
        try:
            namespaces.die_with_parent()
            keep = sorted((0, 1, 2, self._ctl_w, self._go_r, self._out_w))
            for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
                os.closerange(low + 1, high)  # nothing of the harness's (a ledger's lock) lives on in here
            namespaces.unshare(_NAMESPACES)
            syscalls._mount("none", "/", "", _MS_REC | _MS_PRIVATE, "")  # nothing propagates back
            inner = os.fork()
            if inner == 0:
                self._inner_child(env)
            os.write(self._ctl_w, f"pid {inner}\n".encode())
            os.close(self._ctl_w)
            code = os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1])
        except BaseException:  # noqa: BLE001  told to the harness, then the child ends
            os.write(self._ctl_w, f"error {traceback.format_exc(limit=1).splitlines()[-1]}\n".encode())
        os._exit(code & 0xFF if code >= 0 else 128 - code)

    def _inner_child(self, env: dict[str, str]) -> None:  # pragma: no cover  (a forked child)
        try:
            namespaces.die_with_parent()
            _enter(str(self.root), self.cwd, "layerbench")
            os.write(self._ctl_w, b"prepared\n")
            os.close(self._ctl_w)
            if os.read(self._go_r, 1) != b"g":
                os._exit(1)
            fd = os.open("/dev/null", os.O_RDONLY)
            os.dup2(fd, 0)
            os.dup2(self._out_w, 1)
            os.dup2(self._out_w, 2)
            os.execvpe(self.argv[0], list(self.argv), env)
        except BaseException as exc:  # noqa: BLE001  before "prepared": the harness reads it; after: the output
            msg = f"error {type(exc).__name__}: {exc}\n".encode()
            try:
                os.write(self._ctl_w, msg)
            except OSError:
                os.write(self._out_w, msg)
        os._exit(127)

    def begin(self) -> None:
        """Let the waiting process execve its entrypoint."""
        os.write(self._go_w, b"g")

    def exit_status(self) -> int | None:
        """Once pid 1 has ended: the launcher's child reaps it and ends with its status (waited for here)."""
        if self._status is None and self._outer is not None:
            self._status = os.waitstatus_to_exitcode(os.waitpid(self._outer, 0)[1])
            self._outer = None
        return self._status

    def stop(self) -> None:
        """SIGKILL the container's pid 1 (the kernel ends every process of its pid namespace), reap."""
        if self._outer is not None:
            if self.pid and self.pidfd >= 0:  # pinned: the pid cannot name another process
                try:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                select.select([self.pidfd], [], [], _STOP_WAIT_S)  # ended (its mounts with it) before the launcher goes
            os.kill(self._outer, signal.SIGKILL)
            os.waitpid(self._outer, 0)
            self._outer = None
        if self.ledger is not None and self._noted is not None:
            self.ledger.released("daemon", self._noted)
            self._noted = None
        for fd in (self._out_r, self._ctl_r, self._go_w, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _note(self, pid: int) -> None:
        if self.ledger is not None:
            self._noted = daemon_id(pid)
            self.ledger.made("daemon", self._noted)
