"""A cell's image registry: Debian's docker-registry (the reference distribution registry), for real.

`registry(...)` owns the registry's whole life: its config (ours) and log under the cell's
directory, its storage under the work root (`registry-storage/`, shared by every cell and
run, so an image is pushed once per machine: a push is skipped when the storage already
holds the tag at the layout's digest), the process started in a new session, recorded in
the run's ledger (a `daemon`, by pid and start time) before it runs a single instruction of
the registry, killed with the runner (PR_SET_PDEATHSIG) and stopped on exit, after errors
and signals too. With a shaped link it runs in a network namespace of its own behind a
veth (kernel/netshape.py); else on 127.0.0.1. A link with a delay (`100mbit+20ms`) puts our
delaying proxy (run/delayproxy.py) in that namespace on the veth's address, in front of the
registry, which then listens on the namespace's loopback; the proxy is started, recorded
and stopped as the registry is (a `daemon`). Images are pushed with skopeo from their OCI
layout, digests kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from layerbench.errors import UserError
from layerbench.kernel.netshape import Link, ShapedNet, shaped_net
from layerbench.run.ledger import Ledger, daemon_id
from layerbench.run.userns import in_initial_userns

__all__ = ["Registry", "registry", "registry_unavailable", "proxy_buffer", "REGISTRY_BIN"]

REGISTRY_BIN = "/usr/bin/docker-registry"
_PR_SET_PDEATHSIG = 1
_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: false
http:
  addr: {addr}
"""


def registry_unavailable() -> str | None:
    """Why a registry cannot run here, or None."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        return f"the pull step needs Debian's docker-registry ({REGISTRY_BIN}: apt-get install docker-registry)"
    if shutil.which("skopeo") is None:
        return "the pull step pushes with skopeo (apt-get install skopeo)"
    return None


@dataclass
class Registry:
    """A running registry: where it listens, and the images pushed to it (layout -> repository name)."""

    address: str  # host:port, as the puller reaches it
    storage: Path
    link: Link
    net: ShapedNet | None
    pushed: dict[Path, str] = field(default_factory=dict)

    def reference(self, layout: Path) -> str:
        """The reference of an image pushed from `layout`."""
        return f"{self.address}/{self.pushed[layout]}"

    def push(self, layout: Path) -> str:
        """Push the OCI layout (once: a storage that has it already is not written again); its reference."""
        if layout in self.pushed:
            return self.reference(layout)
        name = f"layerbench/{layout.name.lower()}"
        digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        tag_link = self.storage / "docker/registry/v2/repositories" / name / "_manifests/tags/latest/current/link"
        with _locked(self.storage / ".push.lock"):
            if not (tag_link.is_file() and tag_link.read_text().strip() == digest):
                done = subprocess.run(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--dest-tls-verify=false",
                        "--retry-times",
                        "2",
                        f"oci:{layout}",
                        f"docker://{self.address}/{name}:latest",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                if done.returncode != 0:
                    tail = (done.stderr.strip().splitlines() or ["skopeo copy failed"])[-1]
                    raise OSError(f"pushing {layout.name} to the registry: {tail[:300]}")
        self.pushed[layout] = f"{name}:latest"
        return self.reference(layout)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the runner dies (a SIGKILL'd run leaves no registry serving)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()


def _wait_ready(address: str, procs: list[tuple[str, subprocess.Popen[bytes], Path]], timeout_s: float = 20.0) -> None:
    """Until `GET /v2/` answers; a process's own last line if it exits first (each: its name, itself, its log)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc, log in procs:
            if proc.poll() is not None:
                tail = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                raise OSError(f"{name} exited with {proc.returncode}: {tail[:300]}")
        try:
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise OSError(f"docker-registry did not answer on {address} within {timeout_s:g} s")


def _start_daemon(
    argv: list[str], name: str, log: Path, ledger: Ledger | None, stack: contextlib.ExitStack
) -> subprocess.Popen[bytes]:
    """`argv` started held, recorded in the ledger (a `daemon`), let go; stopped when `stack` closes."""
    with open(log, "wb") as out:
        # `read` holds the process until the ledger has its pid; then `exec` makes it the daemon (same pid)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", 'read -r _ && exec "$@"', name, *argv],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509  prctl + setsid only
            close_fds=True,
        )
    ident = daemon_id(proc.pid)
    if ledger is not None:
        ledger.made("daemon", ident)
    stack.callback(_stop, proc, ledger, ident)
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    return proc


def proxy_buffer(link: Link) -> int:
    """The bytes the delaying proxy holds in a direction at most: twice the link's rate × delay, 1 to 256 MiB."""
    bdp = (link.rate_bps or 0) // 8 * link.delay_ms // 1000
    return min(256 << 20, max(1 << 20, 2 * bdp))


@contextmanager
def registry(link: Link, home: Path, storage: Path, ledger: Ledger | None, tag: str) -> Iterator[Registry]:
    """A docker-registry serving `storage`, reached over `link`; its config and log in `home` (made here).

    Everything is released on exit: the process (SIGTERM, then SIGKILL), the namespace and veth,
    `home`. `tag` (a few lower-case letters and digits) names the namespace and veth.
    """
    if (why := registry_unavailable()) is not None:
        raise UserError(why)
    storage.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, home, True)
        net: ShapedNet | None = None
        if link.shaped:
            net = stack.enter_context(shaped_net(link, ledger, tag))
            address = listen = f"{net.ns_ip}:5000"
            if link.delay_ms:  # the proxy takes the veth's address, the registry the namespace's loopback
                listen = "127.0.0.1:5001"
        else:
            port = _free_port()
            address = listen = f"127.0.0.1:{port}"
        config = home / "config.yml"
        config.write_text(_CONFIG.format(storage=storage, addr=listen))
        log = home / "registry.log"
        serve = [REGISTRY_BIN, "serve", str(config)]
        if net is not None:
            serve = ["ip", "netns", "exec", net.netns, *serve]
        procs = [("docker-registry", _start_daemon(serve, "layerbench-registry", log, ledger, stack), log)]
        if net is not None and link.delay_ms:
            plog = home / "delayproxy.log"
            proxy = [
                *("ip", "netns", "exec", net.netns, sys.executable, "-m", "layerbench.run.delayproxy"),
                *(address, listen, str(link.delay_ms), str(proxy_buffer(link))),
            ]
            procs.append(
                ("the delaying proxy", _start_daemon(proxy, "layerbench-delayproxy", plog, ledger, stack), plog)
            )
        _wait_ready(address, procs)
        yield Registry(address, storage, link, net)


def _stop(proc: subprocess.Popen[bytes], ledger: Ledger | None, ident: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if ledger is not None:
        ledger.released("daemon", ident)


@dataclass
class Registries:
    """A cell's registries, one per link, started on first use and stopped when the cell ends (`close`)."""

    home: Path  # the cell's directory: each registry's config and log go in a directory of it
    storage: Path  # shared by every registry: images pushed once per machine
    ledger: Ledger | None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _running: dict[str, Registry] = field(default_factory=dict)

    def get(self, link: Link) -> Registry:
        if link.name not in self._running:
            if not in_initial_userns():  # a rootless cell's registries run as root outside its namespace
                raise UserError(
                    f"the registry at link {link.name} was not started before the cell's user namespace "
                    "(steps.start_registries)"
                )
            tag = f"{os.getpid() % 0xFFFFF:x}{len(self._running)}{int(time.monotonic() * 1000) % 1296:x}"
            self._running[link.name] = self._stack.enter_context(
                registry(link, self.home / f"registry-{tag}", self.storage, self.ledger, tag)
            )
        return self._running[link.name]

    def close(self) -> None:
        self._running.clear()
        self._stack.close()
