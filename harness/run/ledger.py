"""The ledger: every resource a run makes, written down before it is made.

Each run keeps `ledger.jsonl` in its own directory under the work root (its *run
directory*) and holds an exclusive lock on it while it lives. `release_abandoned` (the
`cleanup` verb) reads the ledgers of runs that died (SIGKILL, power loss), and releases
what they made in reverse order: daemons, mounts (and anything mounted below them), loop
devices, files, directories. It touches nothing a ledger does not name, and a ledger is
untrusted input: an entry is acted on only when it names what that run made, inside its
run directory, reached without following a symlink —

- `mount`: mounts at or below a path inside the run directory;
- `loop`: loop devices whose backing file is that inode, a regular file inside the run directory;
- `file`, `dir`: a path inside the run directory (a directory's tree is removed without
  following symlinks or crossing into a mount);
- `daemon`: named `<pid>:<start time>` (`daemon_id`), the process with that pid *and* start
  time (so a recycled pid is never hit) that also carries this run's tag in its
  environment (`TAG`: the ledger's path, which `Ledger.open` puts in the environment every
  process the run starts inherits);
- `netns`, `veth`: only names of the form kernel/netshape.py gives (`release_net`);
- a kind of an engine's (`containerd-namespace`: a namespace a run made on a user's containerd,
  `<namespace>@<socket>`): released by the function the caller hands `release_abandoned` for that
  kind (`Releaser`; `layerbench cleanup` hands drivers/_containerd_namespace.release_entry), given
  the entry and the run's id (`run_id`), which the names the run gives there carry; without one the
  entry is skipped. These go last, once nothing of the run's is mounted or running.

One thing more than its entries: a process that carries the run's tag and no `daemon` entry
names (a container's first process in the instant between `crun create` and its entry, a
daemon's child) is stopped first, as a daemon is. The tag is in the environment of every
process the run started, so a process made before its entry could be written is found too.

A work root, run directory or ledger file another user owns or may write in is refused
whole (kernel/safety.py): its ledger is never read. Anything else is skipped with one line
saying why.

Daemons (the `daemon` kind), for any service a run starts (zfs-fuse, a registry, containerd,
podman), are written down before they run: start the process held (a shell that `read`s
before it `exec`s the daemon under the same pid), record it, then let it go:

    proc = subprocess.Popen(["/bin/sh", "-c", 'read -r _ && exec "$@"', "name", *argv], stdin=PIPE, ...)
    ident = daemon_id(proc.pid)
    ledger.made("daemon", ident)
    proc.stdin.write(b"go\n"); proc.stdin.close()          # now it runs
    ...                                                    # stop it
    ledger.released("daemon", ident)

The daemon must run in the foreground (not fork away from that pid) and keep the
environment it was started with (pass `env=` only as `{**os.environ, ...}`). `cleanup`
stops a dead run's daemon with SIGTERM, then SIGKILL after `DAEMON_GRACE_S`, through a
pidfd opened before the identity is checked again.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbench.errors import UserError
from layerbench.kernel import loopdev, process, safety, syscalls
from layerbench.kernel.netshape import release_net

__all__ = [
    "Ledger",
    "release",
    "release_abandoned",
    "daemon_id",
    "untagged",
    "run_id",
    "Releaser",
    "Skip",
    "LEDGER_NAME",
    "TAG",
    "DAEMON_GRACE_S",
]

LEDGER_NAME = "ledger.jsonl"
#: the environment variable a run's daemons carry (`Ledger.environ`): the run's ledger path
TAG = "LAYERBENCH_LEDGER"


def untagged(env: tuple[str, ...]) -> tuple[str, ...]:
    """An image's environment without any `TAG` entry of its own: the run's tag is the harness's alone to give
    (an image naming another run's ledger would have its container stopped by that run's `cleanup`)."""
    return tuple(e for e in env if e.split("=", 1)[0] != TAG)


def run_id(ledger_path: Path | str) -> str:
    """The run's id as a name outside the machine's files carries it (a containerd namespace,
    `layerbench-<run id>-<hex>`): 12 hex digits of the sha256 of its ledger's absolute path (`TAG`).
    `cleanup` acts on such a name only when it carries the id of the ledger naming it."""
    return hashlib.sha256(os.path.abspath(ledger_path).encode()).hexdigest()[:12]


#: what releases an entry of an engine's kind: (its path, the run's `run_id`) -> what it did, or None; it
#: raises `Skip` to keep the entry (refused, or to be tried again by the next `cleanup`)
Releaser = Callable[[str, str], "str | None"]


#: a ledger longer than this is not a run's (a few records per cell)
_MAX_LEDGER_BYTES = 64 << 20

#: how long `cleanup` lets a dead run's daemon end on SIGTERM before SIGKILL
DAEMON_GRACE_S = 5.0

_open: list[Ledger] = []  # the ledgers open in this process, the newest last (its path is TAG)


def daemon_id(pid: int) -> str:
    """`<pid>:<start time>`: a process as the ledger names it, so a recycled pid is never killed."""
    return f"{pid}:{process.start_time(pid)}"


@dataclass
class Ledger:
    """Appends `make`/`release` records to a run's ledger and holds the run's lock."""

    path: Path
    _fd: int = field(default=-1, repr=False)

    def open(self) -> Ledger:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._write({"op": "run", "pid": os.getpid()})
        _open.append(self)
        os.environ[TAG] = os.path.abspath(self.path)  # every process the run starts carries it
        return self

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(record) + "\n").encode())
        os.fsync(self._fd)

    def made(self, kind: str, path: Path | str) -> None:
        """Record, before making it, a `dir`, `file`, `loop` (for a backing file), `mount`, a `daemon`
        (`daemon_id`: started held, recorded, then let go), a `netns` or a `veth` (kernel/netshape.py)."""
        self._write({"op": "make", "kind": kind, "path": str(path)})

    def released(self, kind: str, path: Path | str) -> None:
        self._write({"op": "release", "kind": kind, "path": str(path)})

    @property
    def run_id(self) -> str:
        """The run's id, for names the run gives outside its directory (`run_id`)."""
        return run_id(self.path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self in _open:
            _open.remove(self)
            if _open:
                os.environ[TAG] = os.path.abspath(_open[-1].path)
            else:
                os.environ.pop(TAG, None)


def _read(ledger_fd: int, shown: str) -> list[dict[str, Any]]:
    """The records of an open ledger file; a torn or malformed line is skipped."""
    size = os.fstat(ledger_fd).st_size
    if size > _MAX_LEDGER_BYTES:
        raise UserError(f"{shown}: {size} bytes, more than a run's ledger ({_MAX_LEDGER_BYTES}); not read")
    with os.fdopen(os.dup(ledger_fd), "rb") as f:
        text = f.read(_MAX_LEDGER_BYTES).decode(errors="replace")
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a record cut short by the crash
        if isinstance(rec, dict) and isinstance(rec.get("kind"), str) and isinstance(rec.get("path"), str):
            out.append(rec)
    return out


def _pending(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the records say was made and not released, in the order it was made."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        key = (rec["kind"], rec["path"])
        if rec.get("op") == "make":
            live[key] = dict(rec)
        elif rec.get("op") == "release":
            live.pop(key, None)
    return list(live.values())


@dataclass
class _Run:
    """A dead run's directory, open as an fd checked to be ours alone: every entry is resolved below it."""

    path: str
    fd: int
    ledger: str
    releasers: Mapping[str, Releaser] = field(default_factory=dict)

    def rel(self, path: str) -> str | None:
        """`path` relative to the run directory, or None if it is not below it (or is it)."""
        norm = os.path.normpath(path)
        if not os.path.isabs(path) or norm != path.rstrip("/") or os.path.commonpath([norm, self.path]) != self.path:
            return None
        return None if norm == self.path else os.path.relpath(norm, self.path)

    def open(self, rel: str, flags: int) -> int | None:
        """An fd of `rel` below the run directory, no symlink followed; None if it is not there."""
        try:
            return safety.open_beneath(self.fd, rel, flags)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink on the way: not what the run made
                raise Skip("a symlink on the way") from None
            raise


class Skip(Exception):
    """An entry not acted on (it stays in the ledger); its message says why."""


def _release_one(run: _Run, rec: dict[str, Any]) -> str | None:
    kind, path = rec["kind"], rec["path"]
    if kind == "daemon":
        return _stop_daemon(run, path)
    if kind in ("netns", "veth"):
        return release_net(kind, path)  # only names of netshape's own form
    if kind in run.releasers:
        return run.releasers[kind](path, run_id(run.ledger))
    if kind not in ("mount", "loop", "file", "dir"):
        raise Skip("an unknown kind")
    rel = run.rel(path)
    if rel is None:
        raise Skip(f"outside its run directory {run.path}")
    if kind == "mount":
        fd = run.open(rel, os.O_PATH | os.O_DIRECTORY)
        if fd is None:
            return None
        os.close(fd)  # a real directory below the run directory: what is mounted there is the run's
        done = syscalls.unmount_below(path, include_root=True)
        return f"unmounted {', '.join(done)}" if done else None
    if kind == "loop":
        fd = run.open(rel, os.O_PATH)
        if fd is None:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Skip("not a regular file")
            # losetup -j matches by the inode (device and number) of the file open here
            out = subprocess.run(
                ["losetup", "-j", f"/proc/self/fd/{fd}"], capture_output=True, text=True, pass_fds=[fd]
            ).stdout
        finally:
            os.close(fd)
        devices = [line.split(":", 1)[0] for line in out.splitlines() if line.startswith("/dev/loop")]
        if failed := [dev for dev in devices if not loopdev.detach(dev)]:
            raise Skip(f"losetup -d failed on {', '.join(failed)}")  # the entry stays: the next cleanup tries again
        return f"detached {', '.join(devices)} ({path})" if devices else None
    parent_rel, name = os.path.split(rel)
    parent = run.open(parent_rel or ".", os.O_PATH | os.O_DIRECTORY)
    if parent is None:
        return None
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if kind == "file" and not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent)
            return f"removed {path}"
        if kind == "dir" and stat.S_ISDIR(st.st_mode):
            safety.remove_tree(Path(path))  # refuses to cross into a mount; follows no symlink
            return f"removed {path}"
    finally:
        os.close(parent)
    return None


def _stop_daemon(run: _Run, ident: str) -> str | None:
    """Stop the daemon `ident` (`<pid>:<start time>`) names if it is that run's (module docstring)."""
    pid_text, _, start = ident.partition(":")
    if not pid_text.isdigit() or not start.isdigit() or int(pid_text) <= 1:
        raise Skip("not a daemon as the ledger names one (<pid>:<start time>)")
    pid = int(pid_text)
    exe = process.exe_of(pid)
    if process.start_time(pid) != int(start) or exe is None:
        return None  # gone, or its pid holds another process now
    if not process.environ_has(pid, TAG, run.ledger):
        # A process forked by the run without an exec (the built-in launcher) has the environment its
        # parent was started with; it dies with its parent (PR_SET_PDEATHSIG): wait for that, kill nothing.
        proc = process.ProcessId(pid, int(start), exe)
        deadline = time.monotonic() + DAEMON_GRACE_S
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not proc.alive():
            return None
        raise Skip(f"pid {pid} ({exe}) does not carry this run's {TAG}")
    if process.ProcessId(pid, int(start), exe).stop(DAEMON_GRACE_S):
        return f"stopped process {pid} ({exe})"
    return None


def _stop_unnamed(run: _Run, named: set[str]) -> list[str]:
    """Stop the processes that carry the dead run's tag but are no pending `daemon` entry (module docstring):
    SIGTERM to all, SIGKILL after `DAEMON_GRACE_S` to those left (a pid namespace's first process ignores
    SIGTERM). The entries' daemons stay for their turn, in the ledger's order."""
    with process.held_carrying(TAG, run.ledger) as procs:  # each held by its pidfd: stopped through it
        procs.keep(lambda p: f"{p.pid}:{p.start}" not in named)
        stopped = process.stop_all(procs, DAEMON_GRACE_S)
    return [f"stopped process {p.pid} ({p.exe}): it carries this run's {TAG}" for p in stopped]


def _open_run(run_dir: str) -> tuple[_Run, int]:
    """The run directory and its ledger, opened and checked to be the running user's alone."""
    fd = safety.open_dir(run_dir)
    try:
        lfd = os.open(LEDGER_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError as exc:
        os.close(fd)
        raise UserError(f"{run_dir}/{LEDGER_NAME}: {exc.strerror}") from None
    st = os.fstat(lfd)
    why = "not a regular file" if not stat.S_ISREG(st.st_mode) else safety.not_ours(st)
    if why is not None:
        os.close(lfd)
        os.close(fd)
        raise UserError(f"{run_dir}/{LEDGER_NAME}: {why}; its ledger is not read")
    return _Run(run_dir, fd, os.path.join(run_dir, LEDGER_NAME)), lfd


def release(ledger_path: Path, releasers: Mapping[str, Releaser] | None = None) -> list[str]:
    """Release what one ledger lists, newest first, an engine's kinds (`releasers`) last; idempotent.
    Returns what was done, and a line for each entry skipped and why. A run directory or ledger that
    is not the running user's alone is a `UserError`."""
    run, lfd = _open_run(os.path.dirname(os.path.abspath(ledger_path)))
    run.releasers = releasers or {}
    try:
        records = _read(lfd, run.ledger)
        pending = _pending(records)
        actions = _stop_unnamed(run, {rec["path"] for rec in pending if rec["kind"] == "daemon"})
        attached: set[str] = set()  # backing files whose loop device stayed attached: kept for the next try
        # an engine's namespace once nothing of the run's is mounted on its snapshots or running
        for rec in sorted(reversed(pending), key=lambda rec: rec["kind"] in run.releasers):
            try:
                if rec["kind"] == "file" and rec["path"] in attached:
                    raise Skip("its loop device is still attached")
                if (done := _release_one(run, rec)) is not None:
                    actions.append(done)
            except Skip as why:
                actions.append(f"skipped {rec['kind']} {rec['path']}: {why}")
                if rec["kind"] == "loop":
                    attached.add(rec["path"])
        return actions
    finally:
        os.close(lfd)
        os.close(run.fd)


def _held(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)


def release_abandoned(work_root: Path, releasers: Mapping[str, Releaser] | None = None) -> tuple[list[str], list[str]]:
    """Release every dead run's resources under `work_root`; (what was done or skipped, live runs skipped).
    An engine's kinds are released by `releasers` (module docstring).

    A work root another user owns or may write in is a `UserError` before any ledger is read;
    so is a run directory or ledger that is not the running user's alone (one line each, skipped).
    """
    root = os.path.realpath(work_root)
    safety.check_work_root(root, f"--work-root {work_root}")
    actions, live = [], []
    for ledger_path in sorted(Path(root).glob(f"run-*/{LEDGER_NAME}")):
        run_dir = ledger_path.parent
        try:
            if _held(ledger_path):
                live.append(str(run_dir))
                continue
            done = release(ledger_path, releasers)
        except UserError as exc:
            actions.append(f"skipped {run_dir}: {exc}")
            continue
        actions += done
        if any(a.startswith("skipped ") for a in done):
            continue  # what it could not release stays named in its ledger
        ledger_path.unlink(missing_ok=True)
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
            actions.append(f"removed {run_dir}")
    return actions, live
