"""The ledger: every resource a run makes, written down before it is made.

Each run keeps `ledger.jsonl` in its own directory under the work root and holds
an exclusive lock on it while it lives. `release_abandoned` (the `cleanup` verb)
reads the ledgers of runs that died (SIGKILL, power loss), and releases what they
made in reverse order: mounts (and anything mounted below them), loop devices,
files, directories. It touches nothing a ledger does not name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbench.kernel import syscalls
from layerbench.kernel.netshape import release_net

__all__ = ["Ledger", "release", "release_abandoned", "daemon_id", "LEDGER_NAME"]

LEDGER_NAME = "ledger.jsonl"


@dataclass
class Ledger:
    """Appends `make`/`release` records to a run's ledger and holds the run's lock."""

    path: Path
    _fd: int = field(default=-1, repr=False)

    def open(self) -> Ledger:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._write({"op": "run", "pid": os.getpid()})
        return self

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(record) + "\n").encode())
        os.fsync(self._fd)

    def made(self, kind: str, path: Path | str) -> None:
        """Record, before making it, a `dir`, `file`, `loop` (for a backing file), `mount`, a `daemon`
        (`daemon_id`: started stopped, recorded, then let go), a `netns` or a `veth` (run/link.py)."""
        self._write({"op": "make", "kind": kind, "path": str(path)})

    def released(self, kind: str, path: Path | str) -> None:
        self._write({"op": "release", "kind": kind, "path": str(path)})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pending(path: Path) -> list[tuple[str, str]]:
    """What a ledger says was made and not released, in the order it was made."""
    live: dict[tuple[str, str], None] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a record cut short by the crash
        key = (rec.get("kind", ""), rec.get("path", ""))
        if rec.get("op") == "make":
            live[key] = None
        elif rec.get("op") == "release":
            live.pop(key, None)
    return list(live)


def daemon_id(pid: int) -> str:
    """`<pid>:<start time>`: a process as the ledger names it, so a recycled pid is never killed."""
    return f"{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command in parentheses


def _release_daemon(ident: str) -> str | None:
    """Kill the process `ident` names if it is still that process (its start time matches), and wait for it."""
    pid_text, _, start = ident.partition(":")
    if not pid_text.isdigit() or not start.isdigit() or int(pid_text) <= 1:
        return None
    pid = int(pid_text)
    if str(_start_time(pid)) != start:
        return None
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    for _ in range(200):  # a killed process goes once its parent (or init) reaps it
        if str(_start_time(pid)) != start:
            break
        time.sleep(0.01)
    return f"killed process {pid}"


def _release_one(kind: str, path: str) -> str | None:
    if kind == "daemon":
        return _release_daemon(path)
    if kind in ("netns", "veth"):
        return release_net(kind, path)
    if kind == "mount":
        done = syscalls.unmount_below(path, include_root=True)
        return f"unmounted {', '.join(done)}" if done else None
    if kind == "loop":
        out = subprocess.run(["losetup", "-j", path], capture_output=True, text=True).stdout
        devices = [line.split(":", 1)[0] for line in out.splitlines() if line]
        for dev in devices:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        return f"detached {', '.join(devices)} ({path})" if devices else None
    p = Path(path)
    if kind == "file" and os.path.lexists(p):
        p.unlink()
        return f"removed {path}"
    if kind == "dir" and p.is_dir() and not p.is_symlink():
        from layerbench.kernel.safety import remove_tree  # refuses to cross into a mount

        remove_tree(p)
        return f"removed {path}"
    return None


def release(ledger_path: Path) -> list[str]:
    """Release what one ledger lists, newest first; idempotent. Returns what was done."""
    actions = []
    for kind, path in reversed(_pending(ledger_path)):
        if (done := _release_one(kind, path)) is not None:
            actions.append(done)
    return actions


def _held(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)


def release_abandoned(work_root: Path) -> tuple[list[str], list[str]]:
    """Release every dead run's resources under `work_root`; (what was done, live runs skipped)."""
    actions, live = [], []
    for ledger_path in sorted(work_root.glob(f"run-*/{LEDGER_NAME}")):
        if _held(ledger_path):
            live.append(str(ledger_path.parent))
            continue
        actions += release(ledger_path)
        ledger_path.unlink(missing_ok=True)
        run_dir = ledger_path.parent
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
            actions.append(f"removed {run_dir}")
    return actions, live
