"""Waiting for a started container to be ready, by its image's condition (label `org.layerbench.ready`).

- `exit`: its process has exited (status 0 where the runtime can tell);
- `log:TEXT`: a line of its output (stdout and stderr) holds TEXT;
- `http:PORT/PATH`: a GET of PATH on 127.0.0.1:PORT *inside the container's network
  namespace* has an answer (any HTTP status line). The probe tries every millisecond, as a
  readiness probe does (kubelet's, at its own period); its sockets are made in the
  container's network namespace by a thread that joined it (setns is per thread).

The wait polls the container's output and its pidfd, so a process that dies first ends
the wait at once with the tail of what it printed.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from layerbench.kernel import namespaces

__all__ = ["Started", "NotReady", "wait_ready", "DEFAULT_READY"]

#: an image that names no condition is ready when its process exits (a job, not a service)
DEFAULT_READY = "exit"
_TAIL = 400  # characters of the output an error quotes


class Started(Protocol):
    """A container whose process was asked to run (harness/run/runtime.py)."""

    @property
    def pid(self) -> int: ...  # its first process, as the host sees it

    @property
    def output(self) -> int: ...  # read end of its stdout and stderr, non-blocking

    @property
    def pidfd(self) -> int: ...  # a pidfd of `pid`, opened when it was made (it may exit at once)

    def exit_status(self) -> int | None: ...  # once `pid` has ended: its exit status, None if unknown


class NotReady(Exception):
    """The container did not become ready: it exited first, or the timeout passed."""


@dataclass
class _Output:
    fd: int
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False

    def drain(self) -> None:
        while not self.closed:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.closed = True
                return
            self.data += chunk
            if len(self.data) > (1 << 20):  # a chatty process: keep the last MiB
                del self.data[: len(self.data) - (1 << 20)]

    def tail(self) -> str:
        text = self.data.decode(errors="replace").strip()
        return ("..." + text[-_TAIL:]) if len(text) > _TAIL else text


def wait_ready(started: Started, condition: str, timeout_s: float) -> str:
    """Return once `started` is ready by `condition`; NotReady (with its output's tail) otherwise.
    Returns what the container printed until then."""
    out = _Output(started.output)
    pidfd = started.pidfd
    deadline = time.monotonic() + timeout_s
    if condition.startswith("log:"):
        _wait_log(out, pidfd, condition[4:].encode(), deadline)
    elif condition.startswith("http:"):
        port, _, path = condition[5:].partition("/")
        _wait_http(out, pidfd, started.pid, int(port), "/" + path, deadline)
    else:
        _wait_exit(out, pidfd, deadline)
        status = started.exit_status()
        if status not in (None, 0):
            raise NotReady(f"the process exited with status {status}: {out.tail() or '(no output)'}")
    return out.data.decode(errors="replace")


def _gone(out: _Output, what: str) -> NotReady:
    return NotReady(f"the process exited before {what}: {out.tail() or '(no output)'}")


def _wait_log(out: _Output, pidfd: int, text: bytes, deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReady(f"no output line with {text.decode()!r} in time: {out.tail() or '(no output)'}")
        fds = [pidfd] if out.closed else [out.fd, pidfd]
        readable, _, _ = select.select(fds, [], [], left)
        out.drain()
        if text in out.data:
            return
        if pidfd in readable:
            out.drain()
            if text in out.data:
                return
            raise _gone(out, f"printing {text.decode()!r}")


def _wait_exit(out: _Output, pidfd: int, deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReady(f"the process did not exit in time: {out.tail() or '(no output)'}")
        readable, _, _ = select.select([pidfd] if out.closed else [out.fd, pidfd], [], [], left)
        out.drain()
        if pidfd in readable:
            return


def _ask(port: int, path: str, left: float) -> bool:
    """One GET on 127.0.0.1:port (this thread's network namespace); whether an HTTP answer came."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(max(0.001, left))
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return s.recv(16).startswith(b"HTTP/")
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
            return False


def _wait_http(out: _Output, pidfd: int, pid: int, port: int, path: str, deadline: float) -> None:
    result: list[BaseException | bool] = []
    stop = threading.Event()
    done_r, done_w = os.pipe()  # the probe's end, seen by select at once

    def probe() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                namespaces.setns(fd, namespaces.CLONE_NEWNET)  # this thread only
            finally:
                os.close(fd)
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if _ask(port, path, left):
                    result.append(True)
                    return
                time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001  handed to the waiting thread
            result.append(exc)
        finally:
            os.write(done_w, b"x")

    thread = threading.Thread(target=probe, name="ready-probe", daemon=True)
    thread.start()
    try:
        while True:
            readable, _, _ = select.select([done_r, pidfd] + ([] if out.closed else [out.fd]), [], [])
            out.drain()
            if done_r in readable:
                break
            if pidfd in readable:
                raise _gone(out, f"answering on port {port}")
    finally:
        stop.set()
        thread.join()
        os.close(done_r)
        os.close(done_w)
    if not result:
        raise NotReady(f"no HTTP answer on 127.0.0.1:{port}{path} in time: {out.tail() or '(no output)'}")
    if isinstance(result[0], BaseException):
        raise NotReady(f"the readiness probe failed: {result[0]}")
