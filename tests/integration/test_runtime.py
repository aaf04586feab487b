"""The runtimes of the `run` step on real mounts: the process really runs inside the container, crun
touches no cgroup, a killed run leaves nothing once `cleanup` has run, rootless cells start it too."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from layerbench.driver import Driver
from layerbench.images.build import build_image
from layerbench.images.config import READY_LABEL, ImageConfig
from layerbench.images.image_sources import HostDirImage
from layerbench.kernel import namespaces
from layerbench.plugins import default_plugins
from layerbench.run import ledger, ready, runtime, userns
from layerbench.run.steps import SampleState, run_step
from layerbench.scenario import Step
from layerbench.testing import userns_session

from ..conftest import ROOT, driver_on_store, require

pytestmark = pytest.mark.mounts
RUNTIMES = [
    pytest.param(
        r, marks=pytest.mark.skipif(runtime.unavailable(r) is not None, reason=f"{r}: {runtime.unavailable(r)}")
    )
    for r in runtime.RUNTIMES
]
TOKEN = secrets.token_hex(8)
SHOW = "cat /etc/only-in-image; grep ' / ' /proc/self/mountinfo; ls /; cat /proc/net/dev; echo ready"


@dataclasses.dataclass
class ConfiguredDir(HostDirImage):
    """A host directory as an image, with the OCI config a built image carries."""

    config: ImageConfig | None = None


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root file system of Debian's busybox-static (apt-get download), and a file only it holds."""
    if not ROOT:
        pytest.skip("starting containers needs root (or a rootless cell's user namespace)")
    where = tmp_path_factory.mktemp("busybox")
    got = subprocess.run(["apt-get", "download", "busybox-static"], cwd=where, capture_output=True, text=True)
    debs = list(where.glob("busybox-static_*.deb"))
    if got.returncode != 0 or not debs:
        pytest.skip(f"apt-get download busybox-static failed (the Debian mirror?): {got.stderr.strip()[-200:]}")
    root = where / "root"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    for name in ("sh", "cat", "grep", "ls", "sleep", "echo", "httpd"):
        os.symlink("busybox", root / "bin" / name)
    (root / "etc").mkdir()
    (root / "etc" / "only-in-image").write_text(f"{TOKEN}\n")
    (root / "srv").mkdir()
    (root / "srv" / "index.html").write_text("hello\n")
    os.chmod(where, 0o755)
    return root


def _image(root: Path, argv: tuple[str, ...], ready_on: str = "log:ready") -> ConfiguredDir:
    return ConfiguredDir(root, ImageConfig(entrypoint=argv, labels={READY_LABEL: ready_on}))


def _start(driver: Driver, image: ConfiguredDir, rt: str, work: Path, cid: str = "c0") -> str:
    """Build the image on the driver, start its entrypoint on a container through `rt`; its output."""
    ids: list[str] = []
    build_image(driver, image, created=lambda layer, _root: ids.append(layer))
    driver.create_container(cid, ids[-1])
    root = driver.mount(cid)
    assert image.config is not None
    box = runtime.container(rt, cid, root, image.config.argv(), (), "/", work)
    try:
        box.create()
        box.begin()
        return ready.wait_ready(box, image.config.ready or "exit", 30)
    finally:
        box.stop()
        driver.unmount(cid)


def _root_line(output: str) -> list[str]:
    """(fstype, mount options) of the container's root in its /proc/self/mountinfo."""
    line = next(x for x in output.splitlines() if " - " in x and x.split()[4] == "/")
    mount_options, _, rest = line.partition(" - ")
    return [rest.split()[0], mount_options.split()[5]]


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize(
    "name,fstype", [("overlay2", "overlay"), ("btrfs", "btrfs"), ("fuse-overlayfs", "fuse.fuse-overlayfs")]
)
def test_the_process_runs_inside_the_container(
    busybox_root: Path, tmp_path: Path, rt: str, name: str, fstype: str
) -> None:
    require(name)
    with driver_on_store(name, tmp_path / "store") as (driver, store):
        work = store.mountpoint / "runtime"
        work.mkdir()
        out = _start(driver, _image(busybox_root, ("/bin/sh", "-c", SHOW)), rt, work)
    assert TOKEN in out  # a file only the image holds
    kind, options = _root_line(out)
    assert kind == fstype  # its root is the driver's mount
    assert {"nodev", "nosuid"} <= set(options.split(","))
    listing = set(out.split(TOKEN)[1].split())
    assert {"bin", "etc", "srv", "proc", "dev"} <= listing and "home" not in listing and "var" not in listing
    interfaces = [x.split(":")[0].strip() for x in out.splitlines() if ":" in x and "|" not in x and "/" not in x]
    assert interfaces == ["lo"]  # no network but loopback


def _cgroup_tree() -> tuple[list[str], str, str]:
    dirs = sorted(top for top, _, _ in os.walk("/sys/fs/cgroup"))
    return dirs, Path("/proc/self/cgroup").read_text(), Path("/proc/1/cgroup").read_text()


@pytest.mark.skipif(runtime.unavailable("crun") is not None, reason=f"crun: {runtime.unavailable('crun')}")
def test_crun_leaves_the_cgroup_tree_as_it_was(busybox_root: Path, tmp_path: Path) -> None:
    before = _cgroup_tree()
    with driver_on_store("overlay2", tmp_path / "store") as (driver, store):
        work = store.mountpoint / "runtime"
        work.mkdir()
        out = _start(driver, _image(busybox_root, ("/bin/sh", "-c", "cat /proc/self/cgroup; echo ready")), "crun", work)
    assert _cgroup_tree() == before
    inside = [x for x in out.splitlines() if x != "ready"]
    assert inside == before[1].splitlines()  # the container's process stayed in the harness's own cgroups


_CHILD = """
import sys, time
from pathlib import Path
from layerbench.run import ledger, runtime
rt, root, run_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
book = ledger.Ledger(run_dir / ledger.LEDGER_NAME).open()
box = runtime.container(rt, "killed", root, ("/bin/sleep", "1000"), (), "/", run_dir, book)
box.create()
box.begin()
print(box.pid, getattr(box, "holder", None) and box.holder.pid, flush=True)
time.sleep(1000)
"""


@pytest.mark.parametrize("rt", RUNTIMES)
def test_a_sigkilled_run_leaves_nothing_after_cleanup(busybox_root: Path, tmp_path: Path, rt: str) -> None:
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD), rt, str(busybox_root), str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    pids = [int(p) for p in child.stdout.readline().split() if p.isdigit() and p != "0"]
    starts = {pid: namespaces.start_time(pid) for pid in pids}
    assert pids and all(starts.values())
    child.send_signal(signal.SIGKILL)
    child.wait()
    actions, live = ledger.release_abandoned(tmp_path)
    assert not live
    deadline = time.monotonic() + 10
    while any(namespaces.alive(p, s) for p, s in starts.items() if s) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p, s in starts.items() if s and namespaces.alive(p, s)], actions
    assert not run_dir.exists() or not any(run_dir.glob(ledger.LEDGER_NAME)), actions


_CHILD_IN_THE_WINDOW = """
import os, signal, sys
from pathlib import Path
from layerbench.run import ledger, runtime
root, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
book = ledger.Ledger(run_dir / ledger.LEDGER_NAME).open()
box = runtime.container("crun", "window", root, ("/bin/sleep", "1000"), (), "/", run_dir, book)
note = box._note
def killed_before_the_entry(pid):
    if pid != box.holder.pid:  # the container's first process: `crun create` made it, no entry names it yet
        print(pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    note(pid)
box._note = killed_before_the_entry
box.create()
"""


@pytest.mark.skipif(runtime.unavailable("crun") is not None, reason=f"crun: {runtime.unavailable('crun')}")
def test_a_run_killed_between_crun_create_and_its_entry_leaves_nothing_after_cleanup(
    busybox_root: Path, tmp_path: Path
) -> None:
    """The container's first process outlives a SIGKILLed run (crun made it; it waits to exec), and no
    ledger entry names it yet: cleanup finds it by the run's tag in its environment."""
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD_IN_THE_WINDOW), str(busybox_root), str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    pid = int(child.stdout.readline())
    start = namespaces.start_time(pid)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert start is not None and namespaces.alive(pid, start)  # left waiting by the dead run
    actions, live = ledger.release_abandoned(tmp_path)
    assert not live
    assert not namespaces.alive(pid, start), actions
    assert any(f"stopped process {pid} " in line for line in actions), actions


def _run_steps(driver: Driver, store: Any, image: ConfiguredDir, steps: list[Step]) -> dict[str, list[float]]:
    ids: list[str] = []
    build_image(driver, image, created=lambda layer, _root: ids.append(layer))
    state = SampleState(driver, image, ids[-1], store, store.usage(), 0, prefix="s0")
    got: dict[str, list[float]] = defaultdict(list)
    try:
        for step in steps:
            run_step(state, step, lambda m, v: got[m].append(v), lambda label, what: None)
    finally:
        state.release()
    return dict(got)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_the_run_step_times_its_phases_and_counts_what_it_read(busybox_root: Path, tmp_path: Path, rt: str) -> None:
    steps = [
        Step("run", {"runtime": rt, "cold": True}, None, label="step[0] run"),
        Step("run", {"runtime": rt, "prefix": "warm", "keep": True}, None, label="step[1] run"),
        Step("run", {"runtime": rt, "prefix": "second"}, None, label="step[2] run"),
    ]
    image = _image(busybox_root, ("/bin/sh", "-c", "cat /etc/only-in-image; echo ready"))
    with driver_on_store("overlay2", tmp_path / "store") as (driver, store):
        got = _run_steps(driver, store, image, steps)
    for pre in ("", "warm_", "second_"):
        for phase in ("create_ns", "runtime_ns", "ready_ns", "start_ns", "read_bytes", "read_fraction"):
            assert len(got[pre + phase]) == 1, pre + phase
    assert got["cold_start_ns"] == got["start_ns"]  # no pull in this sample
    assert got["start_ns"][0] == got["create_ns"][0] + got["runtime_ns"][0] + got["ready_ns"][0]
    # a cold start reads the shell (the busybox binary) from the store; later ones find its pages cached,
    # shared through the overlay's lower file
    assert 0 < got["read_bytes"][0] <= (busybox_root / "bin" / "busybox").stat().st_size + (1 << 16)
    assert got["warm_read_bytes"] == [0] and got["second_read_bytes"] == [0]
    assert 0 < got["read_fraction"][0] <= 1.01


def test_an_image_without_an_entrypoint_is_refused(busybox_root: Path, tmp_path: Path) -> None:
    image = ConfiguredDir(busybox_root, None)
    with driver_on_store("overlay2", tmp_path / "s") as (driver, store), pytest.raises(ValueError, match="Entry"):
        _run_steps(driver, store, image, [Step("run", {}, None, label="step[0] run")])


@pytest.mark.parametrize("rt", RUNTIMES)
def test_a_process_that_fails_is_not_ready(busybox_root: Path, tmp_path: Path, rt: str) -> None:
    image = _image(busybox_root, ("/bin/sh", "-c", "echo starting; exit 3"))
    with driver_on_store("overlay2", tmp_path / "s") as (driver, store), pytest.raises(ready.NotReady, match="start"):
        _run_steps(driver, store, image, [Step("run", {"runtime": rt}, None, label="step[0] run")])


@pytest.mark.parametrize("rt", RUNTIMES)
def test_ready_on_an_http_answer_inside_the_container(busybox_root: Path, tmp_path: Path, rt: str) -> None:
    image = _image(busybox_root, ("/bin/httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/srv"), "http:8080/index.html")
    with driver_on_store("overlay2", tmp_path / "store") as (driver, store):
        got = _run_steps(driver, store, image, [Step("run", {"runtime": rt}, None, label="step[0] run")])
    assert got["ready_ns"][0] > 0
    # the server listened in the container's network namespace, not the host's
    assert ":1F90 " not in Path("/proc/net/tcp").read_text()


@pytest.mark.parametrize("rt", RUNTIMES)
def test_a_rootless_driver_starts_it_in_its_user_namespace(busybox_root: Path, tmp_path: Path, rt: str) -> None:
    name = "overlay2-rootless"
    require(name)
    image = _image(busybox_root, ("/bin/sh", "-c", "cat /proc/self/uid_map; " + SHOW))

    def body(driver: Driver) -> str:
        driver.setup()
        try:
            work = driver.home.parent / "runtime"
            work.mkdir()
            return _start(driver, image, rt, work)
        finally:
            driver.close()

    with userns_session(default_plugins().driver(name), tmp_path / "store", 1 << 30) as driver:
        out = userns.run_in_userns(body, driver, expose=[driver.home.parent, busybox_root])
    assert TOKEN in out
    kind, options = _root_line(out)
    assert kind == "overlay" and {"nodev", "nosuid"} <= set(options.split(","))
    assert f"0 {userns.USERNS_ID} " in " ".join(out.split())  # uid 0 inside is the unprivileged uid outside


def test_the_results_name_the_fraction_unit() -> None:
    from layerbench.analysis import results
    from layerbench.units import human

    assert results.unit_of("read_fraction") == "fraction"
    assert human(0.064, "fraction") == "6.4%"
    assert json.dumps(0.064)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_an_image_cannot_give_its_container_a_runs_tag(busybox_root: Path, tmp_path: Path, rt: str) -> None:
    """An image's Env naming `LAYERBENCH_LEDGER` (another run's ledger) is dropped: the container carries only
    the tag of the run that started it (crun), or none (builtin), so no other run's `cleanup` stops it. Before,
    the builtin launcher's container carried the image's (crun's had both; a shell keeps the last, ours)."""
    require("overlay2")
    other = f"{ledger.TAG}=/var/tmp/layerbench/run-other/ledger.jsonl"
    with driver_on_store("overlay2", tmp_path / "store") as (driver, store):
        work = store.mountpoint / "runtime"
        work.mkdir()
        ids: list[str] = []
        build_image(driver, HostDirImage(busybox_root), created=lambda layer, _root: ids.append(layer))
        driver.create_container("c0", ids[-1])
        root = driver.mount("c0")
        notes = ledger.Ledger(tmp_path / ledger.LEDGER_NAME).open()
        argv = ("/bin/sh", "-c", "echo ready; exec sleep 60")
        box = runtime.container(rt, "c0", root, argv, (other, "A=1"), "/", work, notes)
        try:
            box.create()
            box.begin()
            ready.wait_ready(box, "log:ready", 30)
            with open(f"/proc/{box.pid}/environ", "rb") as f:  # the entrypoint's, as it was exec'd
                env = f.read().decode().split("\0")
            tags = [e for e in env if e.startswith(f"{ledger.TAG}=")]
        finally:
            box.stop()
            notes.close()
            driver.unmount("c0")
    assert "A=1" in env and other not in tags
    assert tags == ([f"{ledger.TAG}={tmp_path / ledger.LEDGER_NAME}"] if rt == "crun" else []), tags
