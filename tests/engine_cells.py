"""What the engines' cold-start tests share (tests/integration/test_podman_cold_start.py and
test_containerd_cold_start.py): the busybox images' OCI layouts, a cold-start cell run with the ledger's
records noted, the checks of an engine's phases, and the run's tagged processes. Not a test module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from layerbench.environment import RunEnvironment, applied
from layerbench.errors import UserError
from layerbench.images.debian import open_debian
from layerbench.kernel import mountinfo
from layerbench.run.ledger import LEDGER_NAME, TAG, Ledger
from layerbench.run.plan import RunConfig
from layerbench.run.registry import registry_unavailable
from layerbench.run.runner import run
from layerbench.run.runtime import unavailable

LAYERBENCH = [sys.executable, "-m", "layerbench"]
#: a scenario whose one sample keeps busybox httpd serving (for a SIGKILL mid-run); {engine} names who pulls
SERVING = """
name = "serving"
description = "{engine} pulls busybox-httpd and keeps it serving, sample after sample"
[image]
source = "debian"
recipe = "busybox-httpd"
[repeat]
samples = 1000
warmup = 0
adaptive = false
[[step]]
op = "pull"
[[step]]
op = "run"
runtime = "crun"
keep = true
"""


def need_registry_and_crun() -> None:
    if (why := registry_unavailable()) is not None:
        pytest.skip(why)
    if (why := unavailable("crun")) is not None:
        pytest.skip(why)


def layout(work: Path, recipe: str) -> Path:
    """The recipe's OCI layout under `work` (built once there), or a skip without a Debian mirror."""
    try:
        with applied(RunEnvironment(work_root=work)):
            image = open_debian(recipe)
    except UserError as exc:
        pytest.skip(str(exc))
    assert image.layout is not None
    return image.layout


def blob(layout: Path, digest: str) -> dict[str, Any]:
    return dict(json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_text()))


def manifest(layout: Path) -> dict[str, Any]:
    return blob(layout, json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])


def compressed_layers(layout: Path) -> int:
    return sum(int(layer["size"]) for layer in manifest(layout)["layers"])


def layer_digests(layout: Path) -> list[str]:
    return [str(layer["digest"]) for layer in manifest(layout)["layers"]]


def diff_ids(layout: Path) -> list[str]:
    return [str(d) for d in blob(layout, manifest(layout)["config"]["digest"])["rootfs"]["diff_ids"]]


def tagged(under: Path) -> list[int]:
    """Pids of live processes carrying the tag of a run's ledger under `under`."""
    want = f"{TAG}={under}/".encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if any(e.startswith(want) for e in env) and state != "Z":
            pids.append(int(pid))
    return pids


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cold_start_cell(
    driver: str, work: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """One sample of the cold-start scenario (busybox, loopback) on `driver`; the cell, and every record the
    run's ledger took as (make or release, kind, path)."""
    noted: list[tuple[str, str, str]] = []
    made, released = Ledger.made, Ledger.released

    def note_made(self: Ledger, kind: str, path: Path | str) -> None:
        noted.append(("make", kind, str(path)))
        made(self, kind, path)

    def note_released(self: Ledger, kind: str, path: Path | str) -> None:
        noted.append(("release", kind, str(path)))
        released(self, kind, path)

    monkeypatch.setattr(Ledger, "made", note_made)
    monkeypatch.setattr(Ledger, "released", note_released)
    config = RunConfig(
        scenarios=("cold-start",),
        drivers=(driver,),
        results_dir=results,
        work_root=work,
        quick=True,
        samples=1,
        warmup=0,
        target_ci=0.0,
    )
    doc, _path = run(config, progress=lambda _line: None)
    (cell,) = doc["cells"]
    assert cell["status"] == "ok", cell["error"]
    return cell, noted


def check_engine_phases(cell: dict[str, Any], layout: Path, copies: bool = False) -> None:
    """An engine's cold start: it read every compressed byte of the image and only those, unpacked inside its
    pull (no unpack or apply split), every phase measured, and the phases add up to the whole. The start read
    part of the image, or (`copies`: a container that is a copy of it, containerd's native) up to all of it
    and the last pages of its small files (vfs reads 103% of busybox so)."""
    m = cell["metrics"]
    size = compressed_layers(layout)
    assert m["pulled_bytes"]["samples"] == m["image_pull_bytes"]["samples"] == [size]
    assert size > 0
    assert "unpack_ns" not in m and "apply_ns" not in m
    for phase in ("pull_ns", "create_ns", "runtime_ns", "ready_ns", "cold_start_ns", "warm_start_ns"):
        assert m[phase]["samples"] and min(m[phase]["samples"]) > 0, phase
    (whole,) = m["cold_start_ns"]["samples"]
    parts = sum(m[p]["samples"][0] for p in ("pull_ns", "create_ns", "runtime_ns", "ready_ns"))
    assert 0 <= whole - parts < 10_000  # the whole, less the timer's overhead once instead of four times
    (fraction,) = m["read_fraction"]["samples"]
    assert 0 < fraction <= (1.1 if copies else 1.0), fraction


def sigkill_while_serving(
    driver: str, engine: str, tmp_path: Path, also: Callable[[list[int]], bool]
) -> tuple[Path, list[int], subprocess.CompletedProcess[str]]:
    """`layerbench run` of SERVING on `driver` in a process of its own, SIGKILLed once busybox httpd serves in the
    container (and `also(the run's tagged pids)` holds), then `layerbench cleanup` on its work root. The work
    root, the tagged processes the SIGKILL left (cleanup's work is real when there are some) and cleanup's run."""
    work = tmp_path / "work"
    layout(work, "busybox-httpd")
    scenario = tmp_path / "serving.toml"
    scenario.write_text(SERVING.format(engine=engine))
    argv = [*LAYERBENCH, "run", str(scenario), "-d", driver, "--work-root", str(work)]
    log = tmp_path / "run.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([*argv, "--results-dir", str(tmp_path / "res")], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until the container serves (its process carries the run's tag)
            if any(cmdline(p).startswith(b"/bin/busybox\0httpd\0") for p in tagged(work)):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{engine}'s container never ran: {log.read_text(errors='replace')[-2000:]}")
        assert also(tagged(work))
    finally:
        proc.kill()
        proc.wait()
        left = tagged(work)
        out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    return work, left, out


def check_cleaned(work: Path, out: subprocess.CompletedProcess[str]) -> None:
    """After `cleanup` (its run `out`): no process of the run, no mount or loop device under `work`, no ledger."""
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 15
    while (tagged(work) or mountinfo.points_below(str(work))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tagged(work) == [], out.stdout
    assert mountinfo.points_below(str(work)) == [], out.stdout
    assert str(work) not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert list(work.rglob(LEDGER_NAME)) == []
