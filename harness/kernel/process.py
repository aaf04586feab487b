"""A process named so that a recycled pid is never mistaken for it: pid, start time, executable.

A pid alone names whatever process holds that number now. `ProcessId` adds the
process's start time (field 22 of /proc/PID/stat, clock ticks after boot: no two
processes that ever held one pid share it) and its executable (/proc/PID/exe), so
`stop` signals the process that was recorded or nothing. Signals go through a pidfd
opened and then checked again, so the pid cannot be recycled between the check and
the signal.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from dataclasses import dataclass

__all__ = ["ProcessId", "start_time", "exe_of", "boot_ticks", "environ_has", "carrying", "stop_all"]


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot; None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def exe_of(pid: int) -> str | None:
    """The executable `pid` runs (/proc/PID/exe); None if it cannot be read (gone, a kernel thread)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def boot_ticks() -> int:
    """Now, in the clock ticks after boot that /proc/PID/stat's start times count."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def environ_has(pid: int, key: str, value: str) -> bool:
    """Whether `pid`'s environment (as it started) holds `key=value`."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{key}={value}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def carrying(key: str, value: str) -> list[ProcessId]:
    """Every live process but this one whose environment (as it started) holds `key=value`, read from /proc.

    A pidfd is opened first, then the process's identity (pid, start time, executable) and environment are
    read, and it is kept only if the pidfd's process has not exited after: then the pid was that process's
    throughout, so a process that carried the tag and exited, its pid taken by another (a root process,
    another run's) in between, is never named by the other's identity (the start time alone cannot tell two
    processes started within one clock tick apart)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            pidfd = os.pidfd_open(int(name))
        except OSError:
            continue
        try:
            proc = ProcessId.of(int(name))
            if proc is None or not environ_has(proc.pid, key, value):
                continue
            if not select.select([pidfd], [], [], 0)[0] and not _zombie(proc.pid):  # still running: it was this one
                found.append(proc)
        finally:
            os.close(pidfd)
    return found


def stop_all(procs: list[ProcessId], grace: float = 5.0) -> list[ProcessId]:
    """`ProcessId.stop` for several at once: SIGTERM to each, SIGKILL after `grace` s to those left, then
    wait (up to 30 s more). Returns those that were there to stop."""
    fds: dict[ProcessId, int] = {}
    try:
        for proc in procs:
            with contextlib.suppress(OSError):
                fds[proc] = os.pidfd_open(proc.pid)
        live = {proc: fd for proc, fd in fds.items() if proc.alive()}
        left = dict(live)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
            for proc, fd in list(left.items()):
                try:
                    signal.pidfd_send_signal(fd, sig)
                except ProcessLookupError:
                    del left[proc]
            deadline = time.monotonic() + wait
            while left and time.monotonic() < deadline:
                left = {proc: fd for proc, fd in left.items() if not proc._exited(fd, 0.0)}
                time.sleep(0.02)
        return list(live)
    finally:
        for fd in fds.values():
            os.close(fd)


@dataclass(frozen=True)
class ProcessId:
    """One process: its pid, its start time (clock ticks after boot) and its executable's path."""

    pid: int
    start: int
    exe: str

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        """The process that holds `pid` now; None if there is none (or its executable cannot be read)."""
        start, exe = start_time(pid), exe_of(pid)
        if start is None or exe is None:
            return None
        return cls(pid, start, exe)

    def alive(self) -> bool:
        """Whether this very process still runs (not a zombie, not another holding its pid)."""
        return start_time(self.pid) == self.start and exe_of(self.pid) == self.exe and not _zombie(self.pid)

    def stop(self, grace: float = 5.0) -> bool:
        """SIGTERM, then SIGKILL after `grace` seconds; wait (up to 30 s more) until it has exited.

        Returns whether this process was there to stop. A pidfd is opened first and the
        identity checked after, so the signals reach this process or no process.
        """
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:
            return False
        try:
            if not self.alive():
                return False
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
                try:
                    signal.pidfd_send_signal(pidfd, sig)
                except ProcessLookupError:
                    return True
                if self._exited(pidfd, wait):
                    return True
            return True
        finally:
            os.close(pidfd)

    def _exited(self, pidfd: int, wait: float) -> bool:
        """Wait up to `wait` s for the process to exit (a pidfd polls readable then; a zombie counts as gone)."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if select.select([pidfd], [], [], max(0.0, min(left, 0.05)))[0] or _zombie(self.pid):
                return True
            if left <= 0:
                return False
