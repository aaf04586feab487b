"""A process named so that a recycled pid is never mistaken for it: pid, start time, executable.

A pid alone names whatever process holds that number now. `ProcessId` adds the
process's start time (field 22 of /proc/PID/stat, clock ticks after boot: no two
processes that ever held one pid share it) and its executable (/proc/PID/exe), so
`stop` signals the process that was recorded or nothing. Signals go through a pidfd
opened and then checked again, so the pid cannot be recycled between the check and
the signal.

Processes found by what they carry (`held_carrying`: a run's tag in their environment)
come as a `Held` set: each `ProcessId` with the pidfd opened before its identity and
environment were read, kept open until the set is closed. `stop_all` given that set
signals through those pidfds and never opens one by pid again, so a process that exited
after it was found, its pid taken by another started within the same clock tick (same
pid, start time and executable: `ProcessId.alive` cannot tell them apart), is reported
gone and the other is never signalled. `carrying` (a list, its pidfds closed) is for
looking only.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "ProcessId",
    "Held",
    "start_time",
    "exe_of",
    "boot_ticks",
    "environ_has",
    "carrying",
    "held_carrying",
    "stop_all",
]


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


class Held:
    """Processes each held by the pidfd opened before its identity was read; a context manager that closes
    them. Iterates the `ProcessId`s in the order they were found."""

    def __init__(self) -> None:
        self._fds: dict[ProcessId, int] = {}

    def add(self, proc: ProcessId, pidfd: int) -> None:
        """Hold `proc` by `pidfd` (opened before `proc` was read), which the set closes from now on."""
        if proc in self._fds:
            os.close(pidfd)
        else:
            self._fds[proc] = pidfd

    def fd(self, proc: ProcessId) -> int:
        """The pidfd `proc` is held by."""
        return self._fds[proc]

    def keep(self, wanted: Callable[[ProcessId], bool]) -> None:
        """Drop (and close the pidfd of) every process `wanted` says no to."""
        for proc in [p for p in self._fds if not wanted(p)]:
            os.close(self._fds.pop(proc))

    def close(self) -> None:
        """Close every pidfd; the set is empty after."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __iter__(self) -> Iterator[ProcessId]:
        return iter(list(self._fds))

    def __len__(self) -> int:
        return len(self._fds)

    def __enter__(self) -> Held:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def held_carrying(key: str, value: str) -> Held:
    """Every live process but this one whose environment (as it started) holds `key=value`, read from /proc,
    each held by its pidfd (close the set when done: `with held_carrying(...) as procs:`).

    A pidfd is opened first, then the process's identity (pid, start time, executable) and environment are
    read, and it is kept only if the pidfd's process has not exited after: then the pid was that process's
    throughout, so a process that carried the tag and exited, its pid taken by another (a root process,
    another run's) in between, is never named by the other's identity (the start time alone cannot tell two
    processes started within one clock tick apart). The pidfd stays open in the set, for `stop_all`."""
    found = Held()
    try:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                pidfd = os.pidfd_open(int(name))
            except OSError:
                continue
            kept = False
            try:
                proc = ProcessId.of(int(name))
                if proc is not None and environ_has(proc.pid, key, value) and _running(proc, pidfd):
                    found.add(proc, pidfd)
                    kept = True
            finally:
                if not kept:
                    os.close(pidfd)
    except BaseException:
        found.close()
        raise
    return found


def carrying(key: str, value: str) -> list[ProcessId]:
    """`held_carrying`'s processes, their pidfds closed: for looking only. To stop them, hand `stop_all` the
    `Held` set itself; a list makes it open pidfds by pid again, and a pid reused in between within one clock
    tick would name another process."""
    with held_carrying(key, value) as found:
        return list(found)


def _running(proc: ProcessId, pidfd: int) -> bool:
    """Whether `pidfd`'s process, read as `proc`, still runs: its pidfd does not poll readable (exited) after
    the read, so the pid was that process's throughout the read."""
    return not _zombie(proc.pid) and not select.select([pidfd], [], [], 0)[0]


def stop_all(procs: Held | list[ProcessId], grace: float = 5.0) -> list[ProcessId]:
    """`ProcessId.stop` for several at once: SIGTERM to each, SIGKILL after `grace` s to those left, then
    wait (up to 30 s more). Returns those that were there to stop.

    A `Held` set is signalled through its own pidfds (opened before each identity was read), never by pid:
    one that exited since is not there to stop, and whatever holds its pid now is not signalled. The set
    stays open (its owner closes it). A list opens a pidfd by pid for each, then checks its identity."""
    if isinstance(procs, Held):
        return _stop_held(procs, grace)
    held = Held()
    try:
        for proc in procs:
            with contextlib.suppress(OSError):
                held.add(proc, os.pidfd_open(proc.pid))
        return _stop_held(held, grace)
    finally:
        held.close()


def _stop_held(held: Held, grace: float) -> list[ProcessId]:
    """`stop_all` through the set's pidfds: those still running (as read, and by their pidfd after) are
    signalled."""
    live = {proc: held.fd(proc) for proc in held if proc.alive() and _running(proc, held.fd(proc))}
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
