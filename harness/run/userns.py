"""Run a function inside an unprivileged user namespace, as rootless Docker and Podman do.

`run_in_userns(fn, ...)` forks a child that becomes an ordinary user (uid and gid
`USERNS_ID`, no capabilities), unshares a user and a mount namespace, is mapped to
uid 0 there, and runs `fn`. Mounts it makes (overlay with `userxattr`) live in
its own mount namespace: the parent never sees them, and they go with the child,
even when it is killed. Its result (or exception) comes back pickled over a pipe.

The uid map: run by root, the parent writes it for the child, as `newuidmap` does
from /etc/subuid (`0 100000 65536`: namespace uid N is 100000+N on disk); run by
a user, the child maps only itself (`0 <uid> 1`).

Directories the child must reach under ancestors it may not search (the 0700
work root, pytest's temporary root, a Python installed under /root) are
`expose`d: in the child's private mount namespace, while still root, the topmost
such ancestor is shadowed by a tmpfs holding only the path down, and the real
directory is bind-mounted at its own path. The interpreter's import directories
always are. Nothing on the host changes permissions.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["USERNS_COUNT", "USERNS_ID", "UsernsError", "hand_over", "in_initial_userns", "run_in_userns", "unavailable"]

#: The unprivileged uid and gid (like the first /etc/subuid range) that owns a rootless store.
USERNS_ID = 100000
#: How many ids the namespace maps when the parent (root) writes the map.
USERNS_COUNT = 65536

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

T = TypeVar("T")


class UsernsError(RuntimeError):
    """The child failed outside `fn`, timed out, or raised something that cannot be pickled."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), target.encode(), _enc(fstype), flags, _enc(data)), f"mount {target}")


def in_initial_userns() -> bool:
    """True in the machine's own user namespace (uid_map maps the whole 32-bit range)."""
    with open("/proc/self/uid_map") as f:
        return f.read().split() == ["0", "0", "4294967295"]


def unavailable() -> str | None:
    """None when unprivileged user namespaces can be made here, else why not."""
    for path, what in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "kernel.unprivileged_userns_clone"),
        ("/proc/sys/user/max_user_namespaces", "user.max_user_namespaces"),
    ):
        try:
            with open(path) as f:
                if int(f.read()) <= 0:
                    return f"unprivileged user namespaces are disabled ({what} = 0)"
        except FileNotFoundError:
            continue
    return None


def hand_over(root: Path, uid: int = USERNS_ID, gid: int = USERNS_ID) -> None:
    """Give `root` and everything under it to the unprivileged user (root only; else a no-op)."""
    if os.geteuid() != 0:
        return
    os.lchown(root, uid, gid)
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, gid)


def _searchable(path: str, uid: int, gid: int) -> bool:
    st = os.stat(path)
    bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
    return bool(st.st_mode & bit)


def _expose(paths: Sequence[Path], uid: int, gid: int) -> None:
    """In this (private, still root) mount namespace, make `paths` reachable for uid:gid."""
    fds = {str(p): os.open(p, os.O_PATH | os.O_DIRECTORY) for p in paths}
    blocked = {p: [str(a) for a in reversed(Path(p).parents) if not _searchable(str(a), uid, gid)] for p in fds}
    shadowed: set[str] = set()
    for path, fd in fds.items():
        if not blocked[path]:
            continue
        top = blocked[path][0]
        if not any(top == s or top.startswith(s + "/") for s in shadowed):
            _mount("tmpfs", top, "tmpfs", 0, "mode=0755,size=1m")
            shadowed.add(top)
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    for fd in fds.values():
        os.close(fd)


def _import_paths() -> list[Path]:
    """The interpreter's import directories: the child imports lazily, and they may sit under /root."""
    return sorted({Path(p).resolve() for p in sys.path if p and os.path.isdir(p)})


def _become_user(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _child(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    uid: int,
    gid: int,
    count: int,
    expose: Sequence[Path],
    parent: int,
    to_parent: int,
    from_parent: int,
) -> None:
    """The child's whole life; never returns (os._exit)."""
    status = 1
    try:
        try:
            if os.geteuid() == 0:
                _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
                _mount(None, "/", None, MS_REC | MS_PRIVATE)
                _expose([*_import_paths(), *expose], uid, gid)
                _become_user(uid, gid)
            _libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # a uid change clears it; /proc/self/uid_map must be ours
            _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after every credential change
            if os.getppid() != parent:  # the parent died before that
                os._exit(1)
            if count == 1:  # map only ourselves: what any user may do
                _write("/proc/self/setgroups", "deny")
                _write("/proc/self/uid_map", f"0 {uid} 1")
                _write("/proc/self/gid_map", f"0 {gid} 1")
            else:  # the parent writes the range, as newuidmap/newgidmap do
                os.write(to_parent, b"m")
                if os.read(from_parent, 1) != b"k":
                    raise UsernsError("the parent could not write the uid/gid map")
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            payload: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001  everything goes back to the parent
            exc.add_note("in the user namespace:\n" + "".join(traceback.format_tb(exc.__traceback__)).rstrip())
            payload = ("raise", exc)
        try:
            data = pickle.dumps(payload)
        except Exception:  # noqa: BLE001
            what = payload[1]
            text = "".join(traceback.format_exception(what)) if isinstance(what, BaseException) else repr(what)
            data = pickle.dumps(("raise", UsernsError(f"unpicklable result from the user namespace:\n{text}")))
        os.write(to_parent, b"r" + len(data).to_bytes(8, "big"))
        view = memoryview(data)
        while view:
            view = view[os.write(to_parent, view) :]
        status = 0
    finally:
        os._exit(status)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], wait)[0]:
            raise UsernsError("the user-namespace child did not finish in time")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise UsernsError("the user-namespace child died without a result")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _write_maps(pid: int, uid: int, gid: int, count: int) -> None:
    _write(f"/proc/{pid}/uid_map", f"0 {uid} {count}")
    _write(f"/proc/{pid}/gid_map", f"0 {gid} {count}")


def run_in_userns(
    fn: Callable[..., T],
    *args: Any,
    uid: int = USERNS_ID,
    gid: int = USERNS_ID,
    count: int | None = None,
    expose: Sequence[Path] = (),
    timeout_s: float | None = None,
) -> T:
    """Run `fn(*args)` as uid 0 of a new user namespace owned by the unprivileged `uid`.

    Run by root, the child drops to `uid`:`gid` first and the namespace maps `count`
    ids (default `USERNS_COUNT`); run by a user, it is that user and maps itself.
    `fn`'s exception is raised here; the child is killed on timeout or interrupt.
    """
    if os.geteuid() != 0:
        uid, gid, count = os.geteuid(), os.getegid(), 1
    count = count or USERNS_COUNT
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child exits in _child)
        os.close(up_r)
        os.close(down_w)
        _child(fn, args, uid, gid, count, expose, parent, up_w, down_r)
    os.close(up_w)
    os.close(down_r)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    done = False
    try:
        tag = _read_exact(up_r, 1, deadline)
        if tag == b"m":
            try:
                _write_maps(pid, uid, gid, count)
                os.write(down_w, b"k")
            except OSError:
                os.write(down_w, b"x")
                raise
            tag = _read_exact(up_r, 1, deadline)
        size = int.from_bytes(_read_exact(up_r, 8, deadline), "big")
        status, value = pickle.loads(_read_exact(up_r, size, deadline))
        os.waitpid(pid, 0)
        done = True
    finally:
        if not done:
            _kill(pid)
        os.close(up_r)
        os.close(down_w)
    if status == "raise":
        raise value
    return value


def _kill(pid: int) -> None:
    """SIGKILL the child and reap it; its mount namespace, and every mount in it, goes with it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
