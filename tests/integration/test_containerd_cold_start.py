"""The cold start through containerd itself: `ctr images pull` from the cell's registry into the snapshotter, a
container from containerd's own snapshot and record, mounted in crun's namespace and started by crun.

A containerd/overlayfs and a containerd/btrfs cell of the cold-start scenario (busybox, loopback):
containerd's client pulls the image from the harness's docker-registry (the bytes its content store
recorded equal the image's compressed layers) into the named snapshotter, the entrypoint runs to its
ready line on a nodev,nosuid root, and nothing is left after the cell; a second image on the same base
fetches only the layer containerd lacks; a run SIGKILLed while the container serves leaves nothing once
`cleanup` has run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from layerbench.drivers.containerd_snapshotter import (
    ContainerdBtrfsSnapshotter,
    ContainerdOverlayfsSnapshotter,
    ContainerdSnapshotterDriver,
    chain_id,
)
from layerbench.environment import RunEnvironment, applied
from layerbench.errors import UserError
from layerbench.images.debian import open_debian
from layerbench.kernel import mountinfo
from layerbench.kernel.netshape import parse_link
from layerbench.run import ready
from layerbench.run.backing import BackingStore
from layerbench.run.ledger import LEDGER_NAME, TAG, Ledger
from layerbench.run.plan import RunConfig
from layerbench.run.registry import registry, registry_unavailable
from layerbench.run.runner import run
from layerbench.run.runtime import seen_from_inside, unavailable

from ..conftest import require

pytestmark = pytest.mark.mounts
LAYERBENCH = [sys.executable, "-m", "layerbench"]

_SERVING = """
name = "serving"
description = "containerd pulls busybox-httpd and crun keeps it serving, sample after sample"
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


def _need_all(driver: str) -> None:
    require(driver)
    if (why := registry_unavailable()) is not None:
        pytest.skip(why)
    if (why := unavailable("crun")) is not None:
        pytest.skip(why)


def _layout(work: Path, recipe: str) -> Path:
    """The recipe's OCI layout under `work` (built once there), or a skip without a Debian mirror."""
    try:
        with applied(RunEnvironment(work_root=work)):
            image = open_debian(recipe)
    except UserError as exc:
        pytest.skip(str(exc))
    assert image.layout is not None
    return image.layout


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    return dict(json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_text()))


def _manifest(layout: Path) -> dict[str, Any]:
    return _blob(layout, json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])


def _compressed_layers(layout: Path) -> int:
    return sum(int(layer["size"]) for layer in _manifest(layout)["layers"])


def _layer_digests(layout: Path) -> list[str]:
    return [str(layer["digest"]) for layer in _manifest(layout)["layers"]]


def _diff_ids(layout: Path) -> list[str]:
    return [str(d) for d in _blob(layout, _manifest(layout)["config"]["digest"])["rootfs"]["diff_ids"]]


def _tagged(under: Path) -> list[int]:
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


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ctr(driver: ContainerdSnapshotterDriver, *args: str) -> str:
    """`ctr ARGS` on the driver's daemon and namespace: containerd's own view of what we made."""
    daemon = driver.daemon
    assert daemon is not None
    argv = ["ctr", "--address", driver.api.address, "--namespace", driver.api.namespace, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, pass_fds=daemon.pass_fds, check=True)
    return proc.stdout


@pytest.mark.parametrize("driver", ["containerd/overlayfs", "containerd/btrfs"])
def test_a_containerd_cold_start_cell_pulls_from_the_registry_and_runs_to_ready(
    driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_all(driver)
    work = tmp_path / "work"
    layout = _layout(work, "busybox")
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
        results_dir=tmp_path / "results",
        work_root=work,
        quick=True,
        samples=1,
        warmup=0,
        target_ci=0.0,
    )
    doc, _path = run(config, progress=lambda _line: None)
    (cell,) = doc["cells"]
    assert cell["status"] == "ok", cell["error"]
    m = cell["metrics"]
    size = _compressed_layers(layout)
    # containerd's content store recorded every compressed byte of the image, and only those
    assert m["pulled_bytes"]["samples"] == m["image_pull_bytes"]["samples"] == [size]
    assert size > 0
    assert "unpack_ns" not in m and "apply_ns" not in m  # ctr unpacks inside pull_ns
    for phase in ("pull_ns", "create_ns", "runtime_ns", "ready_ns", "cold_start_ns", "warm_start_ns"):
        assert m[phase]["samples"] and min(m[phase]["samples"]) > 0, phase
    (whole,) = m["cold_start_ns"]["samples"]
    parts = sum(m[p]["samples"][0] for p in ("pull_ns", "create_ns", "runtime_ns", "ready_ns"))
    assert 0 <= whole - parts < 10_000
    # the snapshot containerd returned, mounted by us: overlay, or a btrfs subvolume; nodev,nosuid as crun's
    # process saw its root
    fstype = "overlay" if driver == "containerd/overlayfs" else "btrfs"
    seen = [o for step in cell["outcomes"].values() for o in step if o.startswith("container root:")]
    assert seen and all(o.startswith(f"container root: {fstype} (nodev,nosuid)") for o in seen), cell["outcomes"]
    (fraction,) = m["read_fraction"]["samples"]
    assert 0 < fraction <= 1.0
    # the daemon; per container crun's holder, its process and the root's mount point: all made, all released
    makes = sorted((k, p) for op, k, p in noted if op == "make" and k in ("daemon", "mount"))
    assert sum(1 for k, _ in makes if k == "mount") >= 3
    assert makes == sorted((k, p) for op, k, p in noted if op == "release" and k in ("daemon", "mount"))
    assert mountinfo.points_below(str(tmp_path)) == []
    assert _tagged(work) == []


@pytest.mark.parametrize("cls", [ContainerdOverlayfsSnapshotter, ContainerdBtrfsSnapshotter])
def test_containerd_fetches_only_what_it_lacks_into_the_snapshotter_named(
    cls: type[ContainerdSnapshotterDriver], tmp_path: Path
) -> None:
    """busybox-httpd after busybox (the same base layer): ctr fetches only the httpd layer; the layers land in
    the snapshotter named (btrfs too: 1.6.20's `ctr images mount --snapshotter` ignores it, `pull`'s does
    not); a run's container is containerd's record on its snapshot; an image pulled twice is two items."""
    _need_all(cls.name)
    busybox, httpd = _layout(tmp_path / "work", "busybox"), _layout(tmp_path / "work", "busybox-httpd")
    with BackingStore(tmp_path / "store", "btrfs", 1 << 30) as mnt:
        home = mnt / "home"
        home.mkdir()
        driver = cls(home)
        driver.setup()
        try:
            with registry(parse_link("loopback"), tmp_path / "reg", tmp_path / "storage", None, "tcshare") as reg:
                made: list[str] = []
                first = driver.pull_image(reg.push(busybox), "a", made)
                named = reg.push(httpd)
                second = driver.pull_image(named, "b", made)
                again = driver.pull_image(reg.push(busybox), "c", made)
            base, *_ = _layer_digests(busybox)
            assert base in first.fetched and sum(first.fetched.values()) == _compressed_layers(busybox)
            assert base not in second.fetched and set(second.fetched) == set(_layer_digests(httpd)[1:])
            assert again.fetched == {} and made == ["a", "b", "c"]
            other = "overlayfs" if driver.snapshotter == "btrfs" else "btrfs"
            keys = _ctr(driver, "snapshots", "--snapshotter", driver.snapshotter, "ls")
            assert chain_id(_diff_ids(busybox)) in keys and chain_id(_diff_ids(httpd)) in keys
            assert "sha256:" not in _ctr(driver, "snapshots", "--snapshotter", other, "ls")
            box = driver.run_image("r0", "b", "crun", ("/bin/sh", "-c", "echo ready"), (), "/")
            try:
                box.make()
                info = json.loads(_ctr(driver, "containers", "info", "r0"))
                assert (info["Snapshotter"], info["SnapshotKey"]) == (driver.snapshotter, "r0")
                assert info["Image"] == named and info["Runtime"]["Name"] == "layerbench.crun"
                assert info["Spec"]["root"]["path"] == str(box.target)  # the spec crun runs
                box.create()
                assert seen_from_inside(box.pid).startswith("container root: ")
                assert box.target not in map(Path, mountinfo.points_below(str(home)))  # in crun's namespace
                box.begin()
                assert "ready" in ready.wait_ready(box, "log:ready", 30)
            finally:
                box.stop()
            driver.remove("r0")
            assert _ctr(driver, "containers", "ls", "-q").strip() == ""
            for item in ("c", "a", "b"):
                driver.remove(item)
            assert _ctr(driver, "images", "ls", "-q").strip() == ""
            assert "sha256:" not in _ctr(driver, "snapshots", "--snapshotter", driver.snapshotter, "ls")
        finally:
            driver.close()
    assert mountinfo.points_below(str(tmp_path)) == []


def test_a_sigkilled_containerd_run_leaves_nothing_after_cleanup(tmp_path: Path) -> None:
    _need_all("containerd/overlayfs")
    work = tmp_path / "work"
    _layout(work, "busybox-httpd")
    scenario = tmp_path / "serving.toml"
    scenario.write_text(_SERVING)
    argv = [*LAYERBENCH, "run", str(scenario), "-d", "containerd/overlayfs", "--work-root", str(work)]
    log = tmp_path / "run.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([*argv, "--results-dir", str(tmp_path / "res")], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the container serves (its process carries the run's tag)
            if any(_cmdline(p).startswith(b"/bin/busybox\0httpd\0") for p in _tagged(work)):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the container never ran: {log.read_text(errors='replace')[-2000:]}")
        assert any(_cmdline(p).startswith(b"containerd\0") for p in _tagged(work))
    finally:
        proc.kill()
        proc.wait()
        left = _tagged(work)  # SIGKILL left the daemon, crun's holder and the container: cleanup's work is real
        out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
    assert left
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 15
    while (_tagged(work) or mountinfo.points_below(str(work))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _tagged(work) == [], out.stdout
    assert mountinfo.points_below(str(work)) == [], out.stdout
    assert str(work) not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert list(work.rglob(LEDGER_NAME)) == []
