"""Nothing left behind, nothing lost: SIGKILL + cleanup, ENOSPC, busy mounts, hangs, concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

from layerbench.drivers import Overlay2Driver
from layerbench.kernel.process import ProcessId
from layerbench.run import cell as one_cell
from layerbench.run.cell import run_cell
from layerbench.run.plan import Cell, RunConfig
from layerbench.run.runner import run
from layerbench.run.sampling import Sampling
from layerbench.scenario import load_scenario

from ..conftest import require, slow_cell

pytestmark = pytest.mark.mounts
LAYERBENCH = [sys.executable, "-m", "layerbench"]

SLOW = slow_cell(32 << 20)

SMALL = """
name = "small"
description = "One start."
[image]
layers = 1
files = 5
bytes = 1000
[repeat]
samples = 2
warmup = 0
[[step]]
op = "start"
"""


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def _loops_under(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line]


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.name != ".layerbench-work-root")


def test_sigkill_mid_cell_then_cleanup_leaves_nothing(tmp_path: Path) -> None:
    require("overlay2")
    scenario, work = tmp_path / "slow.toml", tmp_path / "work"
    scenario.write_text(SLOW)
    proc = subprocess.Popen(
        [
            *LAYERBENCH,
            "run",
            str(scenario),
            "-d",
            "overlay2",
            "--work-root",
            str(work),
            "--results-dir",
            str(tmp_path / "res"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the cell's store and a container are mounted
            if any("merged" in m for m in _mounts_under(work)):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never mounted a container")
    finally:
        proc.kill()
        proc.wait()
    assert _mounts_under(work) and _loops_under(work)  # SIGKILL left them: cleanup's work is real
    out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "unmounted" in out.stdout and "detached" in out.stdout
    assert _mounts_under(work) == [] and _loops_under(work) == [] and _files_under(work) == []
    again = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to clean" in again.stdout  # idempotent
    (result,) = (tmp_path / "res").rglob("*.json")
    assert json.loads(result.read_text())["status"] == "running"  # the file survived the kill


def test_cleanup_skips_a_live_run(tmp_path: Path) -> None:
    require("overlay2")
    scenario, work = tmp_path / "slow.toml", tmp_path / "work"
    scenario.write_text(SLOW)
    proc = subprocess.Popen(
        [
            *LAYERBENCH,
            "run",
            str(scenario),
            "-d",
            "overlay2",
            "--work-root",
            str(work),
            "--results-dir",
            str(tmp_path / "res"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _mounts_under(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
        assert "still going" in out.stdout and _mounts_under(work)
    finally:
        proc.terminate()  # SIGTERM: the run releases everything itself
        proc.wait(timeout=60)
    assert _mounts_under(work) == [] and _loops_under(work) == [] and _files_under(work) == []
    (result,) = (tmp_path / "res").rglob("*.json")
    doc = json.loads(result.read_text())
    assert doc["status"] == "interrupted" and doc["cells"][-1]["status"] == "interrupted"


def test_enospc_fails_the_cell_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("overlay2")
    full = tmp_path / "full.toml"
    full.write_text(slow_cell(200 << 20).replace("samples = 100000", "samples = 1"))
    small = tmp_path / "small.toml"
    small.write_text(SMALL)
    monkeypatch.setattr(one_cell, "estimate_bytes", lambda c: 64 << 20)  # a store too small for the write
    config = RunConfig(
        scenarios=(str(full), str(small)),
        drivers=("overlay2",),
        order="planned",
        results_dir=tmp_path / "res",
        work_root=tmp_path / "work",
    )
    doc, _ = run(config)
    statuses = {c["scenario"]: (c["status"], c["error"]) for c in doc["cells"]}
    assert statuses["slow"][0] == "error" and "No space left on device" in statuses["slow"][1]
    assert statuses["small"] == ("ok", None)
    assert _mounts_under(tmp_path) == [] and _loops_under(tmp_path) == []


class _Busy(Overlay2Driver):
    """Leaves a file open in the container's mount, so unmount finds it busy."""

    held: ClassVar[list[int]] = []

    def mount(self, container_id: str) -> Path:
        root = super().mount(container_id)
        _Busy.held.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY))
        return root


class _Hangs(Overlay2Driver):
    def mount(self, container_id: str) -> Path:
        root = super().mount(container_id)
        time.sleep(30)
        return root


def test_busy_mount_is_reported_and_released_lazily(tmp_path: Path) -> None:
    require("overlay2")
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    s = load_scenario(path)
    out = run_cell(Cell(s, _Busy, {}, "ext4"), tmp_path / "cell")
    try:
        assert out["status"] == "error" and "busy" in out["error"]
        assert _mounts_under(tmp_path) == []  # detached lazily
        assert not (tmp_path / "cell").exists()
    finally:
        for fd in _Busy.held:
            os.close(fd)
    deadline = time.monotonic() + 10
    while _loops_under(tmp_path) and time.monotonic() < deadline:  # freed once the last user goes
        time.sleep(0.1)
    assert _loops_under(tmp_path) == []


def test_a_hanging_driver_times_out_and_is_cleaned_up(tmp_path: Path) -> None:
    require("overlay2")
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    s = load_scenario(path)
    t0 = time.monotonic()
    out = run_cell(Cell(s, _Hangs, {}, "ext4"), tmp_path / "cell", Sampling(2, 0, 0.0, False, timeout_s=1.0))
    assert time.monotonic() - t0 < 20
    assert out["status"] == "error" and "time limit of 1 s" in out["error"]
    assert _mounts_under(tmp_path) == [] and _loops_under(tmp_path) == [] and not (tmp_path / "cell").exists()


def test_two_runs_at_once_do_not_collide(tmp_path: Path) -> None:
    require("overlay2")
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    args = [
        *LAYERBENCH,
        "run",
        str(path),
        "-d",
        "overlay2",
        "--work-root",
        str(tmp_path / "work"),
        "--results-dir",
        str(tmp_path / "res"),
        "--label",
        "same",
    ]
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    files = list((tmp_path / "res").rglob("*.json"))
    assert len(files) == 2
    assert all(json.loads(f.read_text())["status"] == "finished" for f in files)
    assert _mounts_under(tmp_path) == [] and _files_under(tmp_path / "work") == []


def _zfs_fuse_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "zfs-fuse"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_sigkill_mid_zfs_cell_then_cleanup_leaves_no_daemon_pool_or_mount(tmp_path: Path) -> None:
    require("zfs")
    scenario, work = tmp_path / "slow.toml", tmp_path / "work"
    scenario.write_text(SLOW)
    args = ["run", str(scenario), "-d", "zfs", "--work-root", str(work), "--results-dir", str(tmp_path / "res")]
    proc = subprocess.Popen([*LAYERBENCH, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # wait until a container's dataset is mounted
            with open("/proc/self/mountinfo") as f:
                if any(str(work) in line and "fuse" in line and "/pool/" in line for line in f):
                    break
            if proc.poll() is not None:
                (result,) = (tmp_path / "res").rglob("*.json")
                error = json.loads(result.read_text())["cells"][0]["error"]
                if "a zfs-fuse daemon already runs" in error:  # zfs-fuse serves one socket per machine
                    pytest.skip(f"another zfs-fuse daemon started meanwhile: {error}")
                pytest.fail(f"the run ended before mounting a zfs dataset: {error}")
            time.sleep(0.05)
        else:
            pytest.fail("the run never mounted a zfs dataset")
    finally:
        proc.kill()
        proc.wait()
    (daemon,) = _zfs_fuse_pids()  # SIGKILL left it, serving the pool
    left = ProcessId.of(daemon)
    (pool,) = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True).stdout.split()
    out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"stopped process {daemon} (/usr/sbin/zfs-fuse)" in out.stdout.splitlines()
    assert left is not None and not left.alive()  # (another test run's zfs-fuse may have started since)
    assert _mounts_under(work) == [] and _loops_under(work) == [] and _files_under(work) == []
    assert not os.path.exists("/zfs-kstat")  # nothing mounted outside the work root either
    # the pool went with its daemon (no cache file): no daemon serves it now
    listed = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True).stdout.split()
    assert pool not in listed
