"""A fleet's processes for the tests: `layerbench scheduler` and `layerbench worker`, started as a user
would (mutual TLS, certificates from `layerbench fleet-certs`), each in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from layerbench.run.fleet_tls import FleetTLS, make_fleet_certs

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Certs:
    folder: Path

    def tls(self, host: str) -> FleetTLS:
        return FleetTLS(self.folder / "ca.pem", self.folder / f"{host}.pem", self.folder / f"{host}-key.pem")

    def options(self, host: str) -> list[str]:
        t = self.tls(host)
        return ["--tls-ca", str(t.ca), "--tls-cert", str(t.cert), "--tls-key", str(t.key)]


def make_certs(folder: Path, *hosts: str) -> Certs:
    make_fleet_certs(folder, ["localhost", "client", *hosts])
    return Certs(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_scheduler(
    tmp: Path, certs: Certs, port: int = 0, name: str = "scheduler"
) -> tuple[subprocess.Popen[bytes], str]:
    """`layerbench scheduler` on 127.0.0.1; the process and the address it serves."""
    address_file = tmp / f"{name}.address"
    address_file.unlink(missing_ok=True)
    scratch = tmp / f"{name}.tmp"  # its TMPDIR: what Dask would leave in the machine's /tmp lands here
    scratch.mkdir(exist_ok=True)
    with open(tmp / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            [
                BIN / "layerbench",
                "scheduler",
                "--port",
                str(port),
                "--address-file",
                address_file,
                *certs.options("localhost"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(scratch)},
        )
    deadline = time.monotonic() + 30
    while not (address_file.exists() and address_file.read_text().endswith("\n")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler did not start: {(tmp / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, address_file.read_text().strip()


def start_worker(
    tmp: Path,
    certs: Certs,
    address: str,
    host: str,
    root: Path,
    *extra: str,
    netns: str | None = None,
) -> subprocess.Popen[bytes]:
    """`layerbench worker` for host `host` (in network namespace `netns`, if given)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with open(tmp / f"{host}.log", "ab") as log:
        return subprocess.Popen(
            [
                *prefix,
                BIN / "layerbench",
                "worker",
                address,
                "--work-root",
                root,
                "--name",
                host,
                *certs.options("localhost"),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_workers(address: str, tls: FleetTLS, names: set[str], timeout_s: float = 90) -> dict[str, str]:
    """Wait until the named hosts' workers are connected; their addresses by name."""
    import distributed

    with distributed.Client(address, timeout=30, security=tls.security(), set_as_default=False) as client:
        deadline = time.monotonic() + timeout_s
        while True:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            got = {w["name"]: a for a, w in workers.items() if w["name"] in names}
            if set(got) == names:
                return got
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(names - set(got))} never connected")
            time.sleep(0.2)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left of it."""
    for proc in reversed(procs):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a worker process the nanny left
        except ProcessLookupError:
            pass


def listening(pid: int) -> list[str]:
    """The TCP addresses the process `pid` and its children listen on (ss)."""
    pids = {pid}
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids |= {int(p) for p in (task / "children").read_text().split()}
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if any(f"pid={p}," in line for p in pids)]
