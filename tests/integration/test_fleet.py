"""A fleet on real Dask: a `dask scheduler` and two `layerbench worker` processes on 127.0.0.1
stand for two hosts, each with its own work root and name."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from layerbench.analysis import results
from layerbench.cli import main
from layerbench.kernel import mountinfo
from layerbench.report import build, render
from layerbench.run.fleet import run_fleet
from layerbench.run.fleet_tls import FleetTLS
from layerbench.run.ledger import release_abandoned
from layerbench.run.runner import RunConfig, run

from ..conftest import ROOT, TINY, _leftovers_under, require
from .fleet_procs import (
    BIN,
    Certs,
    free_port,
    listening,
    make_certs,
    start_scheduler,
    start_worker,
    stop,
    wait_for_workers,
)

pytestmark = pytest.mark.mounts
distributed = pytest.importorskip("distributed", reason="the fleet needs dask and distributed (the test extra)")

HOSTS = ("host-a", "host-b")
DISK = """
name = "fleet-disk"
description = "Three containers from a 2 MB image, then the disk used."
[params]
count = [3]
[image]
layers = 2
files = 40
bytes = 2_000_000
[repeat]
samples = 1
warmup = 0
[[step]]
op = "start"
count = "${count}"
[[step]]
op = "usage"
"""
LONG = """
name = "fleet-long"
description = "A vfs cell that takes some seconds: a container copies a 40 MB image, eight times."
[image]
layers = 2
files = 200
bytes = 40_000_000
[repeat]
samples = 8
warmup = 0
[[step]]
op = "start"
[[step]]
op = "usage"
"""


@dataclass
class Fleet:
    address: str
    roots: dict[str, Path]
    certs: Certs
    workers: dict[str, subprocess.Popen[bytes]]

    @property
    def tls(self) -> FleetTLS:
        return self.certs.tls("client")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not ROOT:
        pytest.skip("layerbench worker runs as root")
    require("vfs")
    tmp = tmp_path_factory.mktemp("fleet")
    certs = make_certs(tmp / "certs")
    procs: list[subprocess.Popen[bytes]] = []
    roots = {h: tmp / f"root-{h}" for h in HOSTS}
    try:
        scheduler, address = start_scheduler(tmp, certs)
        procs.append(scheduler)
        workers = {h: start_worker(tmp, certs, address, h, roots[h]) for h in HOSTS}
        procs += workers.values()
        wait_for_workers(address, certs.tls("client"), set(HOSTS))
        yield Fleet(address, roots, certs, workers)
    finally:
        stop(procs)
        for root in roots.values():
            if root.is_dir():
                release_abandoned(root)


def _write(tmp_path: Path, text: str, name: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _disk_per_image(cell: dict[str, Any]) -> float:
    """The containers' disk beyond the image's, in images."""
    disk = statistics.median(cell["metrics"]["disk_bytes"]["samples"])
    image = statistics.median(cell["metrics"]["image_disk_bytes"]["samples"])
    return float((disk - image) / cell["image_bytes"])


def test_a_fleet_run_has_every_cell_from_both_hosts_with_a_local_runs_physics(fleet: Fleet, tmp_path: Path) -> None:
    drivers = ["null", "vfs"] + (["overlay2"] if _can("overlay2") else [])
    disk, tiny = _write(tmp_path, DISK, "disk.toml"), _write(tmp_path, TINY, "tiny.toml")
    r = CliRunner().invoke(
        main,
        [
            "run",
            disk,
            tiny,
            *[a for d in drivers for a in ("-d", d)],
            "-p",
            "containers=1",
            "--samples",
            "1",
            "--warmup",
            "0",
            "--cluster",
            fleet.address,
            *fleet.certs.options("client"),
            "--results-dir",
            str(tmp_path / "res"),
        ],
    )
    assert r.exit_code == 0, r.stderr
    (path,) = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)
    assert set(doc["hosts"]) == set(HOSTS)
    assert all(doc["hosts"][h]["machine"]["kernel"] and doc["hosts"][h]["drivers"]["vfs"]["available"] for h in HOSTS)
    for h in HOSTS:  # each host says what its work root is on, and the report shows it under the host
        assert doc["hosts"][h]["machine"]["disk"].startswith(("ext4 on ", "xfs on ", "btrfs on ", "tmpfs on "))
    md = render(build([doc]), "md")
    machines = md[md.index("## Machine and versions") :]
    assert all(f"{doc['label']} @ {h}" in machines for h in HOSTS)
    assert doc["hosts"][HOSTS[0]]["machine"]["disk"] in machines
    got = {(c["scenario"], c["driver"], c["host"]): c["status"] for c in doc["cells"]}
    want = {(s, d, h): "ok" for s in ("fleet-disk", "tiny") for d in drivers for h in HOSTS}
    assert got == want, [c["error"] for c in doc["cells"] if c["error"]]
    assert len(doc["cells"]) == len(want)  # each cell once per host

    local, _ = run(
        RunConfig(scenarios=(disk,), drivers=("vfs",), results_dir=tmp_path / "local", work_root=tmp_path / "work")
    )
    here = _disk_per_image(local["cells"][0])
    assert local["machine"]["disk"] == doc["hosts"][HOSTS[0]]["machine"]["disk"]  # one disk under /tmp here
    for c in doc["cells"]:
        if c["scenario"] == "fleet-disk" and c["driver"] == "vfs":
            # vfs copies the whole image for every container, on every host, as it does here
            assert 2.7 < _disk_per_image(c) < 3.6, (c["host"], _disk_per_image(c))
            assert abs(_disk_per_image(c) - here) < 0.05 * here, (c["host"], _disk_per_image(c), here)
        if c["scenario"] == "fleet-disk" and c["driver"] == "overlay2":
            assert _disk_per_image(c) < 0.2, (c["host"], _disk_per_image(c))  # containers share the image


def _can(driver: str) -> bool:
    from layerbench.plugins import default_plugins

    return default_plugins().driver(driver).probe() is None


def test_resume_of_a_fleet_run_runs_only_the_missing_cells(fleet: Fleet, tmp_path: Path) -> None:
    config = RunConfig(
        scenarios=(_write(tmp_path, TINY, "tiny.toml"),),
        drivers=("null",),
        samples=1,
        warmup=0,
        results_dir=tmp_path / "res",
    )
    doc, path = run_fleet(config, fleet.address, fleet.tls)
    assert len(doc["cells"]) == 4  # two parameter sets on two hosts
    kept = [doc["cells"][0], doc["cells"][3]]
    doc["cells"], doc["status"] = kept, "interrupted"
    results.save(doc, path)

    lines: list[str] = []
    resumed, same = run_fleet(
        RunConfig(resume=path, results_dir=tmp_path / "res"), fleet.address, fleet.tls, lines.append
    )
    assert same == path
    assert any("2 cells done, 2 to go" in line for line in lines), lines
    assert resumed["cells"][:2] == kept  # the finished cells are kept as they were
    assert sorted((c["params"]["containers"], c["host"]) for c in resumed["cells"]) == [
        (n, h) for n in (1, 2) for h in HOSTS
    ]
    assert resumed["status"] == "finished"


def test_spread_runs_each_cell_once_on_some_host(fleet: Fleet, tmp_path: Path) -> None:
    config = RunConfig(
        scenarios=(_write(tmp_path, TINY, "tiny.toml"),),
        drivers=("null",),
        samples=1,
        warmup=0,
        overrides={"containers": [1, 2, 3, 4]},
        results_dir=tmp_path / "res",
        spread=True,
    )
    doc, _ = run_fleet(config, fleet.address, fleet.tls)
    assert sorted(c["params"]["containers"] for c in doc["cells"]) == [1, 2, 3, 4]
    assert {c["host"] for c in doc["cells"]} <= set(HOSTS) and doc["settings"]["spread"] is True


def _worker_of(client: Any, host: str) -> int:
    (addr,) = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == host]
    pid: int = client.run(os.getpid, workers=[addr])[addr]
    return pid


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def _mounts_under(root: str) -> list[str]:
    """Mounts only: a loop device is attached before its store is mounted."""
    return mountinfo.points_below(root)


def test_a_worker_killed_mid_cell_leaves_that_cell_an_error_cleanup_releases_it_and_retry_failed_reruns_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    config = RunConfig(
        scenarios=(_write(tmp_path, LONG, "long.toml"), _write(tmp_path, TINY, "tiny.toml")),
        drivers=("vfs",),
        overrides={"containers": [1]},
        samples=None,
        order="planned",
        results_dir=tmp_path / "res",
    )
    root = fleet.roots["host-a"]
    outcome: dict[str, Any] = {}

    def go() -> None:
        try:
            outcome["doc"], outcome["path"] = run_fleet(config, fleet.address, fleet.tls)
        except BaseException as exc:  # noqa: BLE001  shown by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    try:
        with distributed.Client(fleet.address, timeout=30, security=fleet.tls.security()) as client:
            deadline = time.monotonic() + 60
            while not _mounts_under(str(root)) and time.monotonic() < deadline:
                time.sleep(0.05)  # the long cell, planned first, has its store mounted on host-a
            assert _mounts_under(str(root)), "host-a never mounted the long cell's store"
            worker = _worker_of(client, "host-a")
            os.kill(worker, signal.SIGSTOP)  # so it cannot notice its cell's process die
            for child in _children(worker):
                os.kill(child, signal.SIGKILL)  # the cell dies as on a power cut: nothing released
            os.kill(worker, signal.SIGKILL)
    finally:
        thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    cells = {(c["scenario"], c["host"]): c for c in outcome["doc"]["cells"]}
    assert len(cells) == 4
    dead = cells[("fleet-long", "host-a")]
    assert dead["status"] == "error" and "KilledWorker" in dead["error"] and "host-a" in dead["error"]
    others = {k: c["error"] for k, c in cells.items() if k != ("fleet-long", "host-a")}
    assert all(c["status"] == "ok" for k, c in cells.items() if k != ("fleet-long", "host-a")), others  # it went on

    assert _leftovers_under(str(root))  # what the killed cell made is still there
    r = CliRunner().invoke(main, ["cleanup", "--work-root", str(root)])
    assert r.exit_code == 0 and "unmounted" in r.stdout, r.stdout
    assert _leftovers_under(str(root)) == []
    assert not list(root.glob("run-*"))

    # --resume --retry-failed runs the killed cell again, on the same host, and keeps the others
    again = RunConfig(resume=outcome["path"], retry_failed=True, results_dir=tmp_path / "res")
    retried, _ = run_fleet(again, fleet.address, fleet.tls)
    assert retried["status"] == "finished"
    after = {(c["scenario"], c["host"]): c for c in retried["cells"]}
    assert after[("fleet-long", "host-a")]["status"] == "ok", after[("fleet-long", "host-a")]["error"]
    assert all(after[k] == c for k, c in cells.items() if k != ("fleet-long", "host-a"))
    assert len(after) == 4 and len(retried["cells"]) == 4


PACKED = """
name = "fleet-packed"
description = "A 2 MB synthetic image packed as an OCI layout under the work root, then imported."
[image]
source = "synthetic-oci"
layers = 1
files = 4
bytes = 2_000_000
[repeat]
samples = 1
warmup = 0
[[step]]
op = "start"
"""


def test_a_fleet_cell_runs_with_the_runs_loop_io_and_image_limit(fleet: Fleet, tmp_path: Path) -> None:
    """--loop-io and --max-image-bytes reach the cell's process on every host (they once stayed on the client)."""
    disk, packed = _write(tmp_path, DISK, "disk.toml"), _write(tmp_path, PACKED, "packed.toml")
    r = CliRunner().invoke(
        main,
        [
            "run",
            disk,
            packed,
            "-d",
            "vfs",
            "--loop-io",
            "buffered",
            "--max-image-bytes",
            "1M",
            "--cluster",
            fleet.address,
            *fleet.certs.options("client"),
            "--results-dir",
            str(tmp_path / "res"),
        ],
    )
    assert r.exit_code == 1, r.stderr  # the packed image's cells fail, as the limit says
    (path,) = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)
    assert doc["settings"]["loop_io"] == "buffered"
    cells = {(c["scenario"], c["host"]): c for c in doc["cells"]}
    assert set(cells) == {(s, h) for s in ("fleet-disk", "fleet-packed") for h in HOSTS}
    for h in HOSTS:
        ran = cells[("fleet-disk", h)]
        assert ran["status"] == "ok" and ran["loop_direct_io"] is False, (h, ran["error"])  # buffered, as asked
        refused = cells[("fleet-packed", h)]
        assert refused["status"] == "error" and "over the image size limit of 1.0 MiB (--max-image-bytes)" in str(
            refused["error"]
        ), (h, refused["error"])
        assert list((fleet.roots[h] / "oci-cache").glob("*-gzip/index.json"))  # packed under the host's work root


def test_cluster_without_dask_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed: import fails
    r = CliRunner().invoke(
        main, ["run", "-d", "null", "--cluster", "tcp://127.0.0.1:1", "--results-dir", str(tmp_path / "res")]
    )
    assert r.exit_code == 2
    assert r.stderr == "layerbench: error: a fleet run needs dask and distributed: pip install 'layerbench[fleet]'\n"


def test_workers_listen_on_this_machine_only_by_default(fleet: Fleet) -> None:
    for host, proc in fleet.workers.items():
        addresses = listening(proc.pid)  # the nanny's, the worker's and its HTTP endpoints
        assert len(addresses) >= 3, (host, addresses)
        assert all(a.startswith("127.0.0.1:") for a in addresses), (host, addresses)


def test_a_tls_fleet_refuses_a_plain_tcp_address_in_one_line(fleet: Fleet, tmp_path: Path) -> None:
    plain = fleet.address.replace("tls://", "tcp://")
    r = CliRunner().invoke(main, ["run", "-d", "null", "--cluster", plain, *fleet.certs.options("client")])
    assert r.exit_code == 2
    assert r.stderr == (
        f"layerbench: error: --cluster {plain}: a fleet speaks only mutual TLS; use "
        f"{fleet.address} with the fleet's certificates\n"
    )


def test_killing_the_scheduler_mid_run_interrupts_the_run_and_resume_finishes_it(tmp_path: Path) -> None:
    """The scheduler dies (SIGKILL) mid-run: the client stops in one line with exit 1, the run is kept as
    interrupted, the worker waits for the scheduler to come back, and --resume finishes the run."""
    if not ROOT:
        pytest.skip("layerbench worker runs as root")
    require("vfs")
    certs = make_certs(tmp_path / "certs")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    root = tmp_path / "root-a"
    long = _write(tmp_path, LONG.replace("[image]", "[params]\nn = [1, 2, 3, 4]\n[image]"), "long.toml")
    run = [
        *("run", long, "-d", "vfs", "--order", "planned", "--results-dir", str(tmp_path / "res")),
        *certs.options("client"),
    ]
    try:
        scheduler, address = start_scheduler(tmp_path, certs, port)
        procs.append(scheduler)
        procs.append(start_worker(tmp_path, certs, address, "host-a", root, "--reconnect-timeout", "120"))
        wait_for_workers(address, certs.tls("client"), {"host-a"})
        client = subprocess.Popen([BIN / "layerbench", *run, "--cluster", address], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (files := list((tmp_path / "res").rglob("*.json"))) or not results.read(files[0])["cells"]:
            assert client.poll() is None and time.monotonic() < deadline, "no cell finished"
            time.sleep(0.2)
        os.kill(scheduler.pid, signal.SIGKILL)
        _, err = client.communicate(timeout=60)
        assert client.returncode == 1, err
        assert "Traceback" not in err, err
        (path,) = files
        assert err.splitlines()[-1] == (
            f"layerbench: the scheduler at {address} went away mid-run; the run is kept, interrupted: "
            f"finish it with --resume {path}"
        )
        doc = results.read(path)
        assert doc["status"] == "interrupted" and 1 <= len(doc["cells"]) < 4
        kept = doc["cells"]

        scheduler, again = start_scheduler(tmp_path, certs, port, name="scheduler-again")
        procs.append(scheduler)
        assert again == address
        wait_for_workers(address, certs.tls("client"), {"host-a"})  # the same worker, reconnected
        assert procs[1].poll() is None
        r = subprocess.run(
            [BIN / "layerbench", "run", "--resume", path, *certs.options("client"), "--cluster", address],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        done = results.read(path)
        assert done["status"] == "finished"
        assert done["cells"][: len(kept)] == kept  # what finished before is kept as it was
        assert sorted(c["params"]["n"] for c in done["cells"]) == [1, 2, 3, 4]
        assert all(c["status"] == "ok" for c in done["cells"]), [c["error"] for c in done["cells"]]
        assert "lost the scheduler" in (tmp_path / "host-a.log").read_text()
    finally:
        stop(procs)
        if root.is_dir():
            release_abandoned(root)
    assert _leftovers_under(str(root)) == []


def test_a_worker_gives_up_on_a_scheduler_gone_longer_than_its_reconnect_timeout(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("layerbench worker runs as root")
    certs = make_certs(tmp_path / "certs")
    address = f"tls://127.0.0.1:{free_port()}"  # nobody listens there
    r = subprocess.run(
        [
            *(BIN / "layerbench", "worker", address, "--work-root", tmp_path / "root", "--name", "host-a"),
            *("--reconnect-timeout", "2", *certs.options("localhost")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"layerbench: error: host host-a: no scheduler at {address} for 2 s (--reconnect-timeout); giving up"
    )


def test_a_scheduler_without_layerbench_is_one_line(tmp_path: Path) -> None:
    """A plain `dask scheduler` from an install without layerbench (made so by hiding the package)."""
    certs = make_certs(tmp_path / "certs")
    tls = certs.tls("localhost")
    address_file = tmp_path / "scheduler.json"
    no_layerbench = (
        "import sys; sys.modules['layerbench'] = None; sys.argv[0] = 'dask-scheduler'; "
        "from distributed.cli.dask_scheduler import main; main()"
    )
    with open(tmp_path / "scheduler.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-c", no_layerbench, "--host", "127.0.0.1", "--port", "0", "--protocol", "tls"),
                *("--tls-ca-file", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key, "--no-dashboard"),
                *("--scheduler-file", address_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)},  # its lock files, not in /tmp
        )
    try:
        deadline = time.monotonic() + 30
        while not address_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(address_file.read_text())["address"]
        r = CliRunner().invoke(
            main,
            ["run", "-d", "null", "--cluster", address, *certs.options("client"), "--results-dir", str(tmp_path)],
        )
        assert r.exit_code == 2
        assert r.stderr == (
            f"layerbench: error: --cluster {address}: the scheduler cannot import layerbench: start it with "
            f"`layerbench scheduler` from the workers' install (docs/fleet.md)\n"
        )
    finally:
        stop([proc])


def test_ctrl_c_on_a_fleet_client_marks_the_run_interrupted_and_exits_130(fleet: Fleet, tmp_path: Path) -> None:
    long = _write(tmp_path, LONG.replace("[image]", "[params]\nn = [1, 2, 3]\n[image]"), "long.toml")
    client = subprocess.Popen(
        [
            # SIGINT at its default, whatever pytest was started with (a background job ignores it)
            *("env", "--default-signal=INT"),
            *(BIN / "layerbench", "run", long, "-d", "vfs", "--results-dir", tmp_path / "res"),
            *("--cluster", fleet.address, *fleet.certs.options("client")),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (files := list((tmp_path / "res").rglob("*.json"))) or not results.read(files[0])["cells"]:
        assert client.poll() is None and time.monotonic() < deadline, "no cell finished"
        time.sleep(0.2)
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("layerbench: interrupted"), err
    doc = results.read(files[0])
    assert doc["status"] == "interrupted" and 1 <= len(doc["cells"]) < 6


def test_a_fleet_process_logs_only_what_matters(fleet: Fleet, tmp_path: Path) -> None:
    """Dask's INFO lines (every call, every connection) are not in a worker's or the scheduler's output;
    layerbench's own lines are."""
    r = CliRunner().invoke(
        main,
        [
            "run",
            _write(tmp_path, TINY, "tiny.toml"),
            "-d",
            "null",
            "--results-dir",
            str(tmp_path / "res"),
            "--cluster",
            fleet.address,
            *fleet.certs.options("client"),
        ],
    )
    assert r.exit_code == 0, r.output
    logs = fleet.roots["host-a"].parent
    text = "".join((logs / name).read_text(errors="replace") for name in ("host-a.log", "scheduler.log"))
    assert "host host-a: connected to" in text
    assert " - INFO - " not in text, text[:2000]


def test_a_scheduler_leaves_nothing_in_the_temporary_directory(tmp_path: Path) -> None:
    """Dask's Scheduler makes dask-scratch-space/ (its lock files) in the temporary directory and leaves it; the
    scheduler keeps it in a directory of its own, removed when it ends (SIGTERM)."""
    certs = make_certs(tmp_path / "certs")
    proc, _address = start_scheduler(tmp_path, certs)
    try:
        (own,) = (tmp_path / "scheduler.tmp").iterdir()  # while it serves
        assert own.name.startswith("layerbench-scheduler-") and (own / "dask-scratch-space").is_dir()
    finally:
        stop([proc])
    assert list((tmp_path / "scheduler.tmp").iterdir()) == []
