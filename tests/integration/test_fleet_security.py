"""A fleet is closed: without a certificate of the fleet's CA nobody gets a worker (root) to run anything.

The attack of issue 21, replayed: an unprivileged user (uid 65534) calls a worker's `run` handler
(and the nanny's, and the scheduler's `run_function`) directly through its port, on loopback and
from another network namespace over a veth pair. Each attempt must be refused, and the same call
made with the fleet's client certificate must run (as root): the door the attack knocks on is real.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.cli import main
from layerbench.kernel import safety
from layerbench.run.ledger import LEDGER_NAME, Ledger, release

from ..conftest import ROOT
from .fleet_procs import Certs, make_certs, start_scheduler, start_worker, stop, wait_for_workers

pytestmark = pytest.mark.mounts
distributed = pytest.importorskip("distributed", reason="the fleet needs dask and distributed (the test extra)")

NOBODY = 65534

#: Calls `run` on each target with each way in; prints {target kind: {way: "ran: EUID" | "refused: ..."}}.
ATTACK = r"""
import asyncio, json, os, ssl, sys
import cloudpickle
from distributed import Security
from distributed.core import rpc

targets, other, fleet, marker = json.loads(sys.argv[1])

def payload():
    with open(marker, "a") as f:
        f.write(f"{os.geteuid()}\n")
    return os.geteuid()

def ways(address):
    def unverified(cert=None):  # the attacker does not check the server: any refusal is the server's
        def args():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            if cert:
                ctx.load_cert_chain(*cert)
            return {"ssl_context": ctx, "require_encryption": True}
        return args
    def fleet_files():
        return Security(tls_ca_file=fleet[0], tls_client_cert=fleet[1], tls_client_key=fleet[2],
                        require_encryption=True).get_connection_args("client")
    yield "plain tcp", address.replace("tls://", "tcp://"), dict
    yield "tls without a certificate", address, unverified()
    yield "tls with another CA's certificate", address, unverified(other)
    yield "tls with the fleet's certificate", address, fleet_files

async def attempt(kind, address, args):
    try:
        r = rpc(address, connection_args=args(), timeout=10)
        try:
            call = r.run_function if kind == "scheduler" else r.run
            out = await asyncio.wait_for(call(function=cloudpickle.dumps(payload), args=cloudpickle.dumps(()),
                                              kwargs=cloudpickle.dumps({})), 20)
        finally:
            await r.close_rpc()
        return f"ran: {out['result'] if isinstance(out, dict) and out.get('status') == 'OK' else out}"
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

async def main():
    out = {}
    for kind, address in targets.items():
        out[kind] = {way: await attempt(kind, a, args) for way, a, args in ways(address)}
    print(json.dumps(out))

asyncio.run(main())
"""


@dataclass
class Fleet:
    address: str
    certs: Certs
    other: Certs  # another CA's, readable by anyone: what an attacker can make


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not ROOT:
        pytest.skip("layerbench worker runs as root, and the attack needs another user")
    tmp = tmp_path_factory.mktemp("fleet-security")
    certs = make_certs(tmp / "certs")
    other = make_certs(Path(safety.DEFAULT_WORK_ROOT.parent) / f"lb-fleet-other-{secrets.token_hex(4)}")
    for p in [other.folder, *other.folder.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # anyone may use these: they are the attacker's
    procs: list[subprocess.Popen[bytes]] = []
    try:
        scheduler, address = start_scheduler(tmp, certs)
        procs.append(scheduler)
        yield Fleet(address, certs, other)
    finally:
        stop(procs)
        for p in other.folder.iterdir():
            p.unlink()
        other.folder.rmdir()


def _targets(address: str, fleet: Fleet, host: str) -> dict[str, str]:
    """The scheduler's, the worker's and its nanny's addresses."""
    with distributed.Client(fleet.address, timeout=30, security=fleet.certs.tls("client").security()) as client:
        (worker,) = [(a, w) for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == host]
    return {"scheduler": address, "worker": worker[0], "nanny": worker[1]["nanny"]}


def _attack(targets: dict[str, str], fleet: Fleet, marker: Path, *prefix: str, fleet_files: str = "client") -> dict:
    tls = fleet.certs.tls(fleet_files)
    other = fleet.other.tls("client")
    arg = json.dumps(
        [
            targets,
            [str(other.cert), str(other.key)],
            [str(tls.ca), str(tls.cert), str(tls.key)],
            str(marker),
        ]
    )
    r = subprocess.run([*prefix, sys.executable, "-c", ATTACK, arg], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out: dict = json.loads(r.stdout.splitlines()[-1])
    return out


def _as_nobody() -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _check(got: dict, targets: dict[str, str], marker: Path, control: dict) -> None:
    for kind in targets:
        assert set(got[kind]) == {
            "plain tcp",
            "tls without a certificate",
            "tls with another CA's certificate",
            "tls with the fleet's certificate",
        }
        for way, outcome in got[kind].items():
            assert outcome.startswith("refused: "), (kind, way, outcome)
        # nobody cannot even read the fleet's key
        assert "PermissionError" in got[kind]["tls with the fleet's certificate"], got[kind]
    # The control: the same calls with the fleet's certificate (as root, who can read it) run, as root,
    # and only those: the doors the attack knocks on are real and open to the fleet's certificate alone
    for kind in targets:
        assert control[kind]["tls with the fleet's certificate"] == "ran: 0", control
        assert all(v.startswith("refused: ") for w, v in control[kind].items() if "fleet" not in w), control
    assert marker.read_text().split() == ["0"] * len(targets)  # written by the control only, never by nobody


def test_an_unprivileged_user_on_this_machine_cannot_get_a_worker_to_run_anything(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "root-a"
    procs = [start_worker(tmp_path, fleet.certs, fleet.address, "host-a", root)]
    try:
        wait_for_workers(fleet.address, fleet.certs.tls("client"), {"host-a"})
        targets = _targets(fleet.address, fleet, "host-a")
        assert all(t.startswith("tls://127.0.0.1:") for t in targets.values()), targets
        marker = tmp_path / "ran-as"
        got = _attack(targets, fleet, marker, *_as_nobody())
        assert not marker.exists()
        control = _attack(targets, fleet, marker)
        _check(got, targets, marker, control)
    finally:
        stop(procs)


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to this one by a veth pair: (its name, the address here, the address there).

    Recorded in a ledger before they are made, so `layerbench cleanup` releases them after a crash.
    """
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        pytest.skip("ip netns cannot run here")
    tag = secrets.token_hex(3)
    ns, here, there = f"lb-f{tag}", f"lbhf{tag}", f"lbtf{tag}"  # names cleanup knows (kernel/netshape.py)
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
    work = safety.prepare_work_root(tmp_path / "work")
    run_dir = work / "run-netns"
    run_dir.mkdir()
    ledger = Ledger(run_dir / LEDGER_NAME).open()
    try:
        ledger.made("netns", ns)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        ledger.made("veth", here)
        subprocess.run(["ip", "link", "add", here, "type", "veth", "peer", "name", there], check=True)
        for cmd in (
            ["ip", "link", "set", there, "netns", ns],
            ["ip", "addr", "add", f"{net}.1/30", "dev", here],
            ["ip", "link", "set", here, "up"],
            ["ip", "-n", ns, "addr", "add", f"{net}.2/30", "dev", there],
            ["ip", "-n", ns, "link", "set", there, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
        ):
            subprocess.run(cmd, check=True)
        yield ns, f"{net}.1", f"{net}.2"
    finally:
        ledger.close()
        release(run_dir / LEDGER_NAME)
        assert not os.path.exists(f"/run/netns/{ns}") and not os.path.exists(f"/sys/class/net/{here}")


def test_an_unprivileged_user_in_another_network_namespace_cannot_get_a_worker_to_run_anything(
    fleet: Fleet, tmp_path: Path, netns: tuple[str, str, str]
) -> None:
    ns, here, _ = netns
    root = tmp_path / "root-b"
    procs = [start_worker(tmp_path, fleet.certs, fleet.address, "host-b", root, "--listen-address", here)]
    try:
        wait_for_workers(fleet.address, fleet.certs.tls("client"), {"host-b"})
        targets = _targets(fleet.address, fleet, "host-b")
        del targets["scheduler"]  # on 127.0.0.1 of this namespace: out of the other's reach anyway
        assert all(t.startswith(f"tls://{here}:") for t in targets.values()), targets
        marker = tmp_path / "ran-as"
        got = _attack(targets, fleet, marker, "ip", "netns", "exec", ns, *_as_nobody())
        assert not marker.exists()
        control = _attack(targets, fleet, marker, "ip", "netns", "exec", ns)  # root there, with the certificate
        _check(got, targets, marker, control)
    finally:
        stop(procs)


def test_cleanup_releases_a_network_namespace_and_veth_a_dead_run_left(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("network namespaces need root")
    tag = secrets.token_hex(3)
    ns, veth = f"lb-f{tag}", f"lbhf{tag}"
    work = safety.prepare_work_root(tmp_path / "work")
    (work / "run-dead").mkdir()
    ledger = Ledger(work / "run-dead" / LEDGER_NAME).open()
    ledger.made("netns", ns)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    ledger.made("veth", veth)
    subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", f"lbtf{tag}"], check=True)
    ledger.close()  # the run died: its lock is gone, its namespace and veth are not
    try:
        r = CliRunner().invoke(main, ["cleanup", "--work-root", str(work)])
        assert r.exit_code == 0, r.output
        assert f"removed network namespace {ns}" in r.stdout and f"removed veth {veth}" in r.stdout
        assert not os.path.exists(f"/run/netns/{ns}") and not os.path.exists(f"/sys/class/net/{veth}")
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        subprocess.run(["ip", "link", "delete", veth], capture_output=True)
