"""zfs: Docker's zfs driver model — a dataset per layer, child = snapshot + clone — on ZFS on FUSE.

The kernel here has no zfs module, so ZFS runs in user space through Debian's
``zfs-fuse``: `setup` starts the daemon in the foreground (`--no-daemon`, no kstat
mount outside the home, `--enable-xattr`: without it every xattr, file capabilities
among them, is refused with ENOTSUP and an image's `security.capability` was lost),
written in the run's ledger (kind `daemon`, `<pid>:<start time>`) before it runs, so
`layerbench cleanup` stops it after a SIGKILL; it makes a sparse file in the driver's
home and creates a pool on it (a unique name per run, no cache file: the pool lives
only as long as the daemon); `close` destroys the pool and stops the daemon (its pid
and start time: never a recycled pid). The home sits on a plain directory (backing
"dir"); the pool is the filesystem under test.

    <pool>/<id>          a dataset per layer and container, mounted at <home>/pool/<id>
    <pool>/<parent>@<id> the snapshot a child is cloned from (destroyed deferred, as Docker
                         does, so it goes with its last clone)

A base layer is `zfs create`; a child layer or container is `zfs snapshot` +
`zfs clone` of its parent; a commit is a snapshot + clone of the container,
promoted so the container can be removed before its committed layer. As in
Docker's zfs driver, the zfs CLI runs inside the timed regions (create_container);
every figure is ZFS on FUSE, not in-kernel ZFS.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from layerbench.driver import Driver, LayerFormat, Style
from layerbench.kernel import syscalls
from layerbench.kernel.process import ProcessId
from layerbench.run.ledger import daemon_id

from ._common import needs_root, unmount_below

__all__ = ["ZfsDriver"]

_BUSY_WAIT_S = 15.0  # how long `remove` retries a dataset zfs-fuse calls busy


def _alive(pid: int) -> bool:
    """True while any thread of `pid` runs; a zombie left for init to reap is not alive."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            continue
    return False


def _zfs_fuse_running() -> list[int]:
    """Pids of live zfs-fuse daemons (zombies waiting for init to reap them do not count)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "zfs-fuse" and _alive(int(entry)):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


class ZfsDriver(Driver):
    """ZFS on FUSE: a dataset per layer, children are snapshot + clone (Docker's zfs model)."""

    name = "zfs"
    style = Style.SNAPSHOT
    layer_format = LayerFormat.FULL
    backings = ("dir",)
    #: size of the sparse file the pool lives on; only written blocks take disk
    pool_bytes = 8 << 30
    #: zfs-fuse's `--enable-xattr`: off, it refuses every xattr and an image's capabilities are lost
    #: (benchmarks/zfs_xattrs.py measures what it costs)
    xattrs: ClassVar[bool] = True

    @classmethod
    def probe(cls) -> str | None:
        if reason := needs_root():
            return reason
        for exe in ("zfs-fuse", "zpool", "zfs"):
            if shutil.which(exe) is None:
                return f"{exe} is not installed (apt-get install zfs-fuse)"
        if not os.path.exists("/dev/fuse"):
            return "there is no /dev/fuse (modprobe fuse)"
        if _zfs_fuse_running():
            return "another zfs-fuse daemon is running, and zfs-fuse serves one machine-wide socket"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "zfs-fuse"], capture_output=True, text=True)
        return {"zfs-fuse": proc.stdout.strip() or "?", "zfs": "ZFS on FUSE"}

    # --- the daemon and the pool ------------------------------------------------------

    def _zfs(self, *args: str) -> str:
        proc = subprocess.run(["zfs", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise OSError(f"zfs {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def setup(self) -> None:
        self.vdev = self.home / "pool.img"
        self.mountpoint = self.home / "pool"
        self.pool = f"lb{os.getpid()}{secrets.token_hex(3)}"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._ident = ""  # the daemon as the ledger names it
        self.daemon_pid: int | None = None  # zfs-fuse's pid, while it runs
        self._pool_made = False
        if others := _zfs_fuse_running():
            raise OSError(f"zfs: a zfs-fuse daemon already runs (pid {others[0]}); it serves one machine-wide socket")
        for attempt in range(20):  # a daemon stopped a moment ago may still hold the socket
            if self._start_daemon():
                break
            if attempt == 19:
                raise OSError(f"zfs-fuse did not start: {self._log_tail()}")
            time.sleep(0.25)

        with open(self.vdev, "wb") as f:
            f.truncate(self.pool_bytes)
        self.mountpoint.mkdir()
        proc = subprocess.run(
            [
                "zpool",
                "create",
                "-o",
                "cachefile=none",
                "-O",
                "devices=off",
                "-O",
                "setuid=off",
                "-m",
                str(self.mountpoint),
                self.pool,
                str(self.vdev),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            self.close()
            raise OSError(f"zpool create failed: {proc.stderr.strip()}")
        self._pool_made = True
        syscalls.harden(str(self.mountpoint))

    def _start_daemon(self) -> bool:
        """Start zfs-fuse in the foreground, held by a shell until the ledger has it, then `exec`ed
        under the same pid; True once it serves (`zpool list` answers), False if it exited (a
        daemon stopped a moment ago still held the socket)."""
        argv = ["zfs-fuse", "--no-daemon", "--no-kstat-mount", *(["--enable-xattr"] if self.xattrs else [])]
        with open(self.home / "zfs-fuse.log", "wb") as log:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", 'read -r _ && exec "$@"', "layerbench-zfs-fuse", *argv],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the harness, which stops it in order
            )
        self._daemon, self._ident, self.daemon_pid = proc, daemon_id(proc.pid), proc.pid
        if self.ledger is not None:
            self.ledger.made("daemon", self._ident)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        deadline = time.monotonic() + 15
        while subprocess.run(["zpool", "list"], capture_output=True).returncode != 0:
            if proc.poll() is not None:
                self._stop_daemon()
                return False
            if time.monotonic() > deadline:
                self.close()
                raise OSError("zfs-fuse did not answer within 15 s")
            time.sleep(0.05)
        return True

    def _log_tail(self) -> str:
        lines = (self.home / "zfs-fuse.log").read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "it exited without a word"

    def _stop_daemon(self, grace: float = 0.5) -> None:
        """SIGTERM; SIGKILL if it is still there after `grace` seconds; reap it; out of the ledger."""
        proc = self._daemon
        if proc is None:
            return
        if proc.poll() is None:
            me = ProcessId.of(proc.pid)
            if me is not None:
                me.stop(grace)
            proc.wait()
        if self.ledger is not None:
            self.ledger.released("daemon", self._ident)
        self._daemon = None

    def _ds(self, item_id: str) -> str:
        return f"{self.pool}/{item_id}"

    def _clone(self, source: str, item_id: str) -> Path:
        snap = f"{self._ds(source)}@{item_id}"
        self._zfs("snapshot", snap)
        self._zfs("clone", snap, self._ds(item_id))
        self._zfs("destroy", "-d", snap)  # deferred: goes with its last clone, as Docker does
        return self._hardened(item_id)

    def _hardened(self, item_id: str) -> Path:
        """The dataset's mount point, its mount made nodev,nosuid: zfs-fuse ignores the
        pool's devices=off and setuid=off (set anyway, for what reads them)."""
        path = self.mountpoint / item_id
        syscalls.harden(str(path))
        return path

    # --- the interface ----------------------------------------------------------------

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        self.lineage.check_new(layer_id)
        if parent is None:
            self._zfs("create", self._ds(layer_id))
            path = self._hardened(layer_id)
            os.chmod(path, 0o755)
        else:
            path = self._clone(parent, layer_id)
        self.lineage.add(layer_id, parent)
        return path

    def create_container(self, container_id: str, image: str) -> None:
        self.lineage.check_new(container_id)
        self._clone(image, container_id)
        self.lineage.add(container_id, image)

    def mount(self, container_id: str) -> Path:
        return self.mountpoint / container_id  # zfs-fuse mounted the dataset when it was made

    def unmount(self, container_id: str) -> None:
        pass

    def commit(self, container_id: str, layer_id: str) -> None:
        self.lineage.check_new(layer_id)
        snap = f"{self._ds(container_id)}@{layer_id}"
        self._zfs("snapshot", snap)
        self._zfs("clone", snap, self._ds(layer_id))
        # Promote: the layer owns the snapshot and the container becomes its clone, so the
        # container can be removed first.
        self._zfs("promote", self._ds(layer_id))
        self._zfs("destroy", "-d", f"{self._ds(layer_id)}@{layer_id}")
        self._hardened(layer_id)
        self.lineage.add_commit(layer_id, container_id)

    def remove(self, item_id: str) -> None:
        self.lineage.check_removable(item_id)
        if (self.mountpoint / item_id).exists():
            # -f: zfs-fuse reports busy otherwise; it can still, for as long as a mount namespace that
            # copied the dataset's mount (a runtime's, just stopped) takes to end: seconds on a loaded machine
            deadline = time.monotonic() + _BUSY_WAIT_S
            while True:
                try:
                    self._zfs("destroy", "-f", "-r", self._ds(item_id))
                    break
                except OSError as exc:
                    if "busy" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        self.lineage.forget(item_id)

    def inspect(self, item_id: str) -> dict[str, str]:
        origin = self._zfs("get", "-H", "-o", "value", "origin", self._ds(item_id)).strip()
        return {
            "Dataset": self._ds(item_id),
            "Mountpoint": str(self.mountpoint / item_id),
            "Origin": origin,
            "Implementation": "ZFS on FUSE (zfs-fuse)",
        }

    def close(self) -> None:
        grace = 0.5  # with no pool left the daemon holds nothing, so it need not be waited out
        if getattr(self, "_pool_made", False):
            grace = 30.0
            for _ in range(3):
                if subprocess.run(["zpool", "destroy", "-f", self.pool], capture_output=True).returncode == 0:
                    grace = 0.5
                    break
                time.sleep(0.2)
            self._pool_made = False
        if getattr(self, "_daemon", None) is not None:
            self._stop_daemon(grace)
        unmount_below(self.home)
        for path in (getattr(self, "vdev", None), self.home / "zfs-fuse.log"):
            if path is not None:
                path.unlink(missing_ok=True)
        mountpoint = getattr(self, "mountpoint", None)
        if mountpoint is not None and mountpoint.is_dir() and not os.path.ismount(mountpoint):
            shutil.rmtree(mountpoint, ignore_errors=True)
