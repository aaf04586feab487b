"""containerd's own snapshotters through its API: the conformance suite on all three, on one daemon for the module.

The module's daemon (Debian's containerd, root on a btrfs store so the btrfs snapshotter
loads) is the user's running containerd of `--containerd-address`: each driver works in a
namespace of its own and leaves nothing in it. Two tests start daemons of their own: a
run's cell (its daemon in the ledger, stopped after) and `cleanup` stopping a dead run's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbench.analysis import results
from layerbench.driver import Driver
from layerbench.drivers._containerd_namespace import refused
from layerbench.drivers.containerd_api import Containerd
from layerbench.drivers.containerd_daemon import ContainerdDaemon
from layerbench.images.build import build_image, files_image
from layerbench.images.image import FileSpec
from layerbench.kernel import mountinfo
from layerbench.plugins import default_plugins
from layerbench.run.backing import BackingStore, allocated_bytes
from layerbench.run.ledger import LEDGER_NAME, Ledger, release_abandoned, run_id
from layerbench.run.plan import RunConfig
from layerbench.run.runner import run
from layerbench.run.session import open_driver
from layerbench.testing.conformance import *  # noqa: F403  the cases, on each of the three
from layerbench.testing.sessions import driver_session
from tests.conftest import require, slow_cell

pytestmark = pytest.mark.mounts

LAYERBENCH_DRIVERS = ["containerd/overlayfs", "containerd/native", "containerd/btrfs"]
LAYERBENCH = [sys.executable, "-m", "layerbench"]


@pytest.fixture(scope="module")
def containerd_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One containerd for the module, its root on a btrfs store; stopped and released after."""
    require("containerd/btrfs")
    workdir = tmp_path_factory.mktemp("containerd")
    with BackingStore(workdir / "store", "btrfs", 2 << 30) as mnt:
        (mnt / "containerd").mkdir(mode=0o700)
        with ContainerdDaemon(mnt / "containerd") as address:
            yield address


@pytest.fixture
def layerbench_driver_class(layerbench_driver_name: str, containerd_address: str) -> type[Driver]:
    """The conformance suite's driver, on the module's daemon (as `--containerd-address` does)."""
    cls = default_plugins().driver(layerbench_driver_name).at(containerd_address)
    if (reason := cls.probe()) is not None:
        pytest.skip(f"{cls.name}: {reason}")
    return cls


def _two_layers(driver: Driver) -> str:
    layers = files_image([[FileSpec("etc/a", 4096, 1)], [FileSpec("etc/b", 8192, 2)]])
    return build_image(driver, layers)


def test_layers_live_in_containerds_root_and_its_content_store_keeps_no_blob(
    containerd_address: str, tmp_path: Path
) -> None:
    """A layer goes through the content store and the applier into the snapshotter's own root;
    the container's mount is what Mounts returned (containerd's overlay: index=off, full lowerdir paths)."""
    cls = default_plugins().driver("containerd/overlayfs").at(containerd_address)
    with driver_session(cls, tmp_path / "s") as d:
        top = _two_layers(d)
        d.create_container("c0", top)
        root = d.mount("c0")
        assert sorted(os.listdir(root / "etc")) == ["a", "b"]
        info = d.inspect("c0")
        assert info["MountType"] == "overlay"
        options = info["MountOptions"].split(",")
        assert "index=off" in options
        lowers = next(o for o in options if o.startswith("lowerdir=")).removeprefix("lowerdir=").split(":")
        assert len(lowers) == 2 and all("io.containerd.snapshotter.v1.overlayfs/snapshots/" in p for p in lowers)
        assert not str(lowers[0]).startswith(str(d.home)), "the snapshots are containerd's, not in the driver's home"
        assert int(d.inspect(top)["UsageBytes"]) >= 8192  # the snapshotter's own Usage of the top layer
        d.unmount("c0")
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_a_users_daemon_keeps_nothing_of_ours(containerd_address: str, tmp_path: Path) -> None:
    """With --containerd-address everything is made in a namespace of our own, and it goes with `close`."""
    cls = default_plugins().driver("containerd/native").at(containerd_address)
    with driver_session(cls, tmp_path / "s") as d:
        top = _two_layers(d)
        d.create_container("c0", top)
        d.mount("c0")
        namespace = d.inspect("c0")["Namespace"]
        client = Containerd(containerd_address, "default")
        assert namespace in client.namespaces()
    try:
        assert namespace not in client.namespaces()
    finally:
        client.close()


def test_a_missing_or_wrong_address_is_one_sentence() -> None:
    cls = default_plugins().driver("containerd/overlayfs")
    assert "No such file" in (cls.at("/nonexistent/c.sock").probe() or "")
    assert (cls.at("/etc/hostname").probe() or "").endswith("not a unix socket")


def test_a_cell_starts_its_own_daemon_and_stops_it(
    engine_cell: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's containerd cell: its daemon on the cell's store, in the ledger, stopped after the cell."""
    require("containerd/overlayfs")
    noted: list[tuple[str, str]] = []
    made, released = Ledger.made, Ledger.released

    def note_made(self: Ledger, kind: str, path: Path | str) -> None:
        noted.append(("make", kind))
        made(self, kind, path)

    def note_released(self: Ledger, kind: str, path: Path | str) -> None:
        noted.append(("release", kind))
        released(self, kind, path)

    monkeypatch.setattr(Ledger, "made", note_made)
    monkeypatch.setattr(Ledger, "released", note_released)
    scenario = engine_cell
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("containerd/overlayfs",),
        results_dir=tmp_path / "results",
        work_root=tmp_path / "work",
        target_ci=0.0,
    )
    doc, _path = run(config, progress=lambda _line: None)
    (cell,) = doc["cells"]
    assert cell["status"] == "ok", cell["error"]
    assert {"startup_ns", "copy_up_ns", "commit_ns", "disk_bytes"} <= set(cell["metrics"])
    assert [op for op, kind in noted if kind == "daemon"] == ["make", "release"]
    assert not _containerd_of(tmp_path)
    results.validate(doc)


def _containerd_of(root: Path) -> list[int]:
    """Pids of containerd daemons whose command line names a path under `root`."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd") and str(root).encode() in b" ".join(cmd):
            pids.append(int(pid))
    return pids


def test_cleanup_stops_the_daemon_of_a_run_that_died(tmp_path: Path) -> None:
    """A run killed with its daemon up: `cleanup` stops that daemon (by pid and start time) from the ledger."""
    require("containerd/overlayfs")
    run_dir = tmp_path / "work" / "run-dead"
    run_dir.mkdir(parents=True)
    ledger = Ledger(run_dir / LEDGER_NAME).open()
    (run_dir / "d").mkdir()
    daemon = ContainerdDaemon(run_dir / "d", ledger)
    daemon.start()
    try:
        ledger.close()  # the run dies: its lock goes, the daemon stays
        daemon.ledger = None
        assert _containerd_of(tmp_path)
        actions, live = release_abandoned(tmp_path / "work")
        pid = daemon.ident.split(":")[0]
        assert not live and any(f"process {pid}" in a for a in actions), actions
        assert not _containerd_of(tmp_path)
    finally:
        daemon.stop()


#: a cell to be killed in the middle, on a user's daemon
SLOW = slow_cell(4 << 20, " on containerd's overlayfs")


def _ours(client: Containerd, before: set[str]) -> list[str]:
    """Namespaces of ours on the daemon that were not there `before`, with a snapshot in them."""
    found = []
    for name in sorted(set(client.namespaces()) - before):
        if name.startswith("layerbench-"):
            ns = Containerd(client.address, name)
            try:
                if ns.snapshots("overlayfs"):
                    found.append(name)
            finally:
                ns.close()
    return found


def test_cleanup_removes_our_namespace_from_a_users_daemon_after_a_sigkill(
    containerd_address: str, tmp_path: Path
) -> None:
    """A run on a user's daemon (--containerd-address) SIGKILLed mid-cell leaves our namespace there, its
    snapshots in it; `cleanup` empties and deletes it from the ledger's entry, and the user's daemon runs on."""
    require("containerd/overlayfs")
    scenario, work = tmp_path / "slow.toml", tmp_path / "work"
    scenario.write_text(SLOW)
    client = Containerd(containerd_address, "default")
    try:
        before = set(client.namespaces())
        argv = [*LAYERBENCH, "run", str(scenario), "-d", "containerd/overlayfs"]
        argv += ["--containerd-address", containerd_address, "--work-root", str(work)]
        proc = subprocess.Popen(
            [*argv, "--results-dir", str(tmp_path / "res")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 120
            while not (found := _ours(client, before)):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the run never made its namespace on the daemon"
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        (namespace,) = found
        (ledger,) = work.glob(f"run-*/{LEDGER_NAME}")
        assert namespace.startswith(f"layerbench-{run_id(ledger)}-")  # named with the run's own id
        ns = Containerd(containerd_address, namespace)
        try:
            assert namespace in client.namespaces() and ns.snapshots("overlayfs")  # SIGKILL left them
            out = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            assert f"removed containerd namespace {namespace}" in out.stdout, out.stdout
            assert namespace not in client.namespaces() and ns.snapshots("overlayfs") == {}
        finally:
            ns.close()
        assert refused(containerd_address) is None and client.snapshotters()["overlayfs"] is None  # it runs on
        assert mountinfo.points_below(str(work)) == [] and not list(work.glob("run-*"))
        again = subprocess.run([*LAYERBENCH, "cleanup", "--work-root", str(work)], capture_output=True, text=True)
        assert again.returncode == 0 and "nothing to clean" in again.stdout  # idempotent
    finally:
        client.close()


# --- faithfulness: our containerd-overlayfs beside containerd's own overlayfs snapshotter ----------------


def _overlay_of(info: dict[str, str]) -> dict[str, str]:
    """An overlay's options by key, from containerd's MountOptions or our driver's inspect."""
    if "MountOptions" in info:
        return {o.partition("=")[0]: o.partition("=")[2] for o in info["MountOptions"].split(",")}
    return {"index": "off", "workdir": info["WorkDir"], "upperdir": info["UpperDir"], "lowerdir": info["LowerDir"]}


_SNAPSHOT_FS = re.compile(r"/snapshots/(\d+)/fs$")


def test_our_containerd_overlayfs_is_faithful_to_containerds(containerd_address: str, tmp_path: Path) -> None:
    """The same 3-layer image through containerd's overlayfs snapshotter and through our re-creation,
    both on btrfs: the same overlay options (keys), the same layout (`snapshots/<n>/fs` lowers,
    uppermost = newest first, `snapshots/<n>/fs` upper and `snapshots/<n>/work` work) and the image's
    snapshots' disk within 1%. One difference, named: containerd writes the options in the order
    index, workdir, upperdir, lowerdir; our mounting path (drivers/_overlay.py) lowerdir first."""
    image = files_image([[FileSpec(f"d{n}/f{i}", 256 << 10, n * 100 + i) for i in range(8)] for n in range(3)])
    seen: dict[str, tuple[dict[str, str], int, list[str]]] = {}
    for name, cls in (
        ("real", default_plugins().driver("containerd/overlayfs").at(containerd_address)),
        ("ours", default_plugins().driver("containerd-overlayfs")),
    ):
        with open_driver(cls, tmp_path / name, "btrfs", 1 << 30) as on:
            d = on.driver
            top = build_image(d, image)
            d.create_container("c0", top)
            d.mount("c0")
            options = _overlay_of(d.inspect("c0"))
            lowers = options["lowerdir"].split(":")
            os.sync()
            disk = sum(allocated_bytes(Path(p).parent) for p in lowers)
            order = [o.split("=", 1)[0] for o in d.inspect("c0").get("MountOptions", "").split(",") if o]
            seen[name] = (options, disk, order)
            d.unmount("c0")
    (real, real_disk, real_order), (ours, ours_disk, _) = seen["real"], seen["ours"]
    assert set(real) == set(ours) == {"index", "workdir", "upperdir", "lowerdir"}
    assert real["index"] == ours["index"] == "off"
    assert real_order == ["index", "workdir", "upperdir", "lowerdir"]  # ours: lowerdir, upperdir, workdir, index
    for options in (real, ours):
        numbers = [int(_SNAPSHOT_FS.search(p).group(1)) for p in options["lowerdir"].split(":")]  # type: ignore[union-attr]
        assert len(numbers) == 3 and numbers == sorted(numbers, reverse=True), options["lowerdir"]
        upper = _SNAPSHOT_FS.search(options["upperdir"])
        assert upper is not None and int(upper.group(1)) > numbers[0]
        assert options["workdir"] == options["upperdir"].removesuffix("/fs") + "/work"
    assert abs(real_disk - ours_disk) <= 0.01 * real_disk, (real_disk, ours_disk)


@pytest.mark.parametrize("length", [99, 104, 107])
def test_a_daemon_starts_where_its_socket_path_is_near_a_unix_address_limit(tmp_path: Path, length: int) -> None:
    """containerd refuses its `<socket>.ttrpc` over 104 bytes: a state directory whose `c.sock` is 99-107
    bytes long (short enough for gRPC's own limit) is reached through /proc/self/fd too."""
    require("containerd/overlayfs")
    base = str(tmp_path / "d")
    pad = length - len(f"{base}/state/c.sock") - 1
    if pad < 1:
        pytest.skip(f"the test's temp path is already over {length} bytes")
    directory = Path(f"{base}{'x' * pad}")
    directory.mkdir(mode=0o700)
    assert len(str(directory / "state" / "c.sock")) == length - 1
    with ContainerdDaemon(directory) as address:
        assert os.path.exists(directory / "state" / "c.sock") and address
