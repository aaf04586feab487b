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
from layerbench.run.fleet import run_fleet
from layerbench.run.ledger import release_abandoned
from layerbench.run.runner import RunConfig, run

from ..conftest import ROOT, _leftovers_under, require
from ..test_cli import TINY

pytestmark = pytest.mark.mounts
distributed = pytest.importorskip("distributed", reason="the fleet needs dask and distributed (the test extra)")

BIN = Path(sys.executable).parent
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


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
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


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not ROOT:
        pytest.skip("layerbench worker runs as root")
    require("vfs")
    tmp = tmp_path_factory.mktemp("fleet")
    procs: list[subprocess.Popen[bytes]] = []
    roots = {h: tmp / f"root-{h}" for h in HOSTS}
    try:
        sched_file = tmp / "scheduler.json"
        with open(tmp / "scheduler.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        BIN / "dask",
                        "scheduler",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--no-dashboard",
                        "--dashboard-address",
                        "127.0.0.1:0",
                        "--scheduler-file",
                        sched_file,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 30
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for h in HOSTS:
            with open(tmp / f"{h}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            BIN / "layerbench",
                            "worker",
                            address,
                            "--work-root",
                            roots[h],
                            "--name",
                            h,
                            "--listen-host",
                            "127.0.0.1",
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(len(HOSTS), timeout=60)
        yield Fleet(address, roots)
    finally:
        _stop(procs)
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
            "--results-dir",
            str(tmp_path / "res"),
        ],
    )
    assert r.exit_code == 0, r.stderr
    (path,) = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)
    assert set(doc["hosts"]) == set(HOSTS)
    assert all(doc["hosts"][h]["machine"]["kernel"] and doc["hosts"][h]["drivers"]["vfs"]["available"] for h in HOSTS)
    got = {(c["scenario"], c["driver"], c["host"]): c["status"] for c in doc["cells"]}
    want = {(s, d, h): "ok" for s in ("fleet-disk", "tiny") for d in drivers for h in HOSTS}
    assert got == want, [c["error"] for c in doc["cells"] if c["error"]]
    assert len(doc["cells"]) == len(want)  # each cell once per host

    local, _ = run(
        RunConfig(scenarios=(disk,), drivers=("vfs",), results_dir=tmp_path / "local", work_root=tmp_path / "work")
    )
    here = _disk_per_image(local["cells"][0])
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
    doc, path = run_fleet(config, fleet.address)
    assert len(doc["cells"]) == 4  # two parameter sets on two hosts
    kept = [doc["cells"][0], doc["cells"][3]]
    doc["cells"], doc["status"] = kept, "interrupted"
    results.save(doc, path)

    lines: list[str] = []
    resumed, same = run_fleet(RunConfig(resume=path, results_dir=tmp_path / "res"), fleet.address, lines.append)
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
    doc, _ = run_fleet(config, fleet.address)
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


def test_a_worker_killed_mid_cell_leaves_that_cell_an_error_and_cleanup_releases_it(
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
            outcome["doc"] = run_fleet(config, fleet.address)[0]
        except BaseException as exc:  # noqa: BLE001  shown by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    try:
        with distributed.Client(fleet.address, timeout=30) as client:
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
