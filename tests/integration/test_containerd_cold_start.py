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
import subprocess
from pathlib import Path

import pytest

from layerbench.drivers.containerd_snapshotter import (
    ContainerdBtrfsSnapshotter,
    ContainerdOverlayfsSnapshotter,
    ContainerdSnapshotterDriver,
    chain_id,
)
from layerbench.kernel import mountinfo
from layerbench.kernel.netshape import parse_link
from layerbench.run import ready
from layerbench.run.registry import registry
from layerbench.run.runtime import seen_from_inside
from layerbench.run.session import open_driver

from .. import engine_cells
from ..conftest import require

pytestmark = pytest.mark.mounts


def _need_all(driver: str) -> None:
    require(driver)
    engine_cells.need_registry_and_crun()


def _ctr(driver: ContainerdSnapshotterDriver, *args: str) -> str:
    """`ctr ARGS` on the driver's daemon and namespace: containerd's own view of what we made."""
    daemon = driver.daemon
    assert daemon is not None
    argv = ["ctr", "--address", driver.api.address, "--namespace", driver.api.namespace, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, pass_fds=daemon.pass_fds, check=True)
    return proc.stdout


@pytest.mark.parametrize("driver", ["containerd/overlayfs", "containerd/native", "containerd/btrfs"])
def test_a_containerd_cold_start_cell_pulls_from_the_registry_and_runs_to_ready(
    driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_all(driver)
    work = tmp_path / "work"
    layout = engine_cells.layout(work, "busybox")
    cell, noted = engine_cells.cold_start_cell(driver, work, tmp_path / "results", monkeypatch)
    # containerd's content store recorded every compressed byte of the image, and only those; ctr unpacks inside
    # pull_ns
    engine_cells.check_engine_phases(cell, layout, copies=driver == "containerd/native")
    # the snapshot containerd returned, mounted by us: overlay, or a btrfs subvolume; nodev,nosuid as crun's
    # process saw its root
    # (native: a bind of the snapshot's directory, a copy of the image, on the store's ext4)
    fstype = {"containerd/overlayfs": "overlay", "containerd/native": "ext4", "containerd/btrfs": "btrfs"}[driver]
    seen = [o for step in cell["outcomes"].values() for o in step if o.startswith("container root:")]
    assert seen and all(o.startswith(f"container root: {fstype} (nodev,nosuid)") for o in seen), cell["outcomes"]
    # the daemon; per container crun's holder, its process and the root's mount point: all made, all released
    makes = sorted((k, p) for op, k, p in noted if op == "make" and k in ("daemon", "mount"))
    assert sum(1 for k, _ in makes if k == "mount") >= 3
    assert makes == sorted((k, p) for op, k, p in noted if op == "release" and k in ("daemon", "mount"))
    assert mountinfo.points_below(str(tmp_path)) == []
    assert engine_cells.tagged(work) == []


@pytest.mark.parametrize("cls", [ContainerdOverlayfsSnapshotter, ContainerdBtrfsSnapshotter])
def test_containerd_fetches_only_what_it_lacks_into_the_snapshotter_named(
    cls: type[ContainerdSnapshotterDriver], tmp_path: Path
) -> None:
    """busybox-httpd after busybox (the same base layer): ctr fetches only the httpd layer; the layers land in
    the snapshotter named (btrfs too: 1.6.20's `ctr images mount --snapshotter` ignores it, `pull`'s does
    not); a run's container is containerd's record on its snapshot; an image pulled twice is two items."""
    _need_all(cls.name)
    busybox, httpd = (
        engine_cells.layout(tmp_path / "work", "busybox"),
        engine_cells.layout(tmp_path / "work", "busybox-httpd"),
    )
    with open_driver(cls, tmp_path / "store", "btrfs", 1 << 30) as session:
        driver, home = session.driver, session.home
        assert isinstance(driver, ContainerdSnapshotterDriver)
        with registry(parse_link("loopback"), tmp_path / "reg", tmp_path / "storage", None, "tcshare") as reg:
            made: list[str] = []
            first = driver.pull_image(reg.push(busybox), "a", made)
            named = reg.push(httpd)
            second = driver.pull_image(named, "b", made)
            again = driver.pull_image(reg.push(busybox), "c", made)
        base, *_ = engine_cells.layer_digests(busybox)
        assert base in first.fetched and sum(first.fetched.values()) == engine_cells.compressed_layers(busybox)
        assert base not in second.fetched and set(second.fetched) == set(engine_cells.layer_digests(httpd)[1:])
        assert again.fetched == {} and made == ["a", "b", "c"]
        other = "overlayfs" if driver.snapshotter == "btrfs" else "btrfs"
        keys = _ctr(driver, "snapshots", "--snapshotter", driver.snapshotter, "ls")
        assert chain_id(engine_cells.diff_ids(busybox)) in keys and chain_id(engine_cells.diff_ids(httpd)) in keys
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
    assert mountinfo.points_below(str(tmp_path)) == []


def test_a_sigkilled_containerd_run_leaves_nothing_after_cleanup(tmp_path: Path) -> None:
    _need_all("containerd/overlayfs")
    work, left, out = engine_cells.sigkill_while_serving(
        "containerd/overlayfs",
        "containerd",
        tmp_path,
        lambda pids: any(engine_cells.cmdline(p).startswith(b"containerd\0") for p in pids),
    )
    assert left  # SIGKILL left the daemon, crun's holder and the container: cleanup's work is real
    engine_cells.check_cleaned(work, out)
