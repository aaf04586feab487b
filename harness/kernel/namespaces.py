"""Namespaces and processes by syscall: unshare, setns, pivot_root, the parent-death signal, pidfds,
a network namespace's loopback, a process's start time.

The built-in container launcher (harness/run/launcher.py) and the crun runtime
(harness/run/runtime.py) are made of these; no process is spawned here.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct

__all__ = [
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWIPC",
    "CLONE_NEWUTS",
    "CLONE_NEWNET",
    "unshare",
    "setns",
    "pivot_root",
    "die_with_parent",
    "loopback_up",
    "pidfd_open",
    "start_time",
    "alive",
    "kill_if_same",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_PIDFD_SEND_SIGNAL, _SYS_PIDFD_OPEN = 424, 434  # the same on every architecture
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    """unshare(2): the calling thread leaves the namespaces `flags` names (CLONE_NEWPID: its next child)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2): the calling thread joins the namespace open at `fd`."""
    _check(_libc.setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """The calling process gets `sig` when the thread that forked it ends (PR_SET_PDEATHSIG)."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def loopback_up() -> None:
    """Bring `lo` up in the calling thread's network namespace (a new one has it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def pidfd_open(pid: int) -> int:
    """A pidfd for `pid` (readable once the process has exited), close-on-exec."""
    return _check(int(_libc.syscall(_SYS_PIDFD_OPEN, pid, 0)), "pidfd_open")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if it is gone:
    with the pid, it names one process, never a later one given the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command (field 2) is in parentheses and may hold anything: split after its last ')'
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    """Whether the process `pid` that started at `started` still exists (a zombie counts as gone)."""
    if start_time(pid) != started:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] != b"Z"


def kill_if_same(pid: int, started: int, sig: int = signal.SIGKILL) -> bool:
    """Send `sig` to `pid` only if it is still the process that started at `started`; whether it was."""
    if pid <= 1:
        return False
    try:
        fd = pidfd_open(pid)  # pinned: from here the pid cannot name another process
    except OSError:
        return False
    try:
        if start_time(pid) != started:
            return False
        return _libc.syscall(_SYS_PIDFD_SEND_SIGNAL, fd, sig, None, 0) == 0
    finally:
        os.close(fd)
