"""overlay2-rootless on the real mechanism: what only an overlay mounted in a user namespace shows."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from layerbench.driver import Driver
from layerbench.drivers.overlay2_rootless import _trial
from layerbench.images.oci import apply_blob, read_image
from layerbench.kernel import mountinfo
from layerbench.plugins import default_plugins
from layerbench.run import cell, runner, userns
from layerbench.run.sampling import Sampling
from layerbench.scenario import builtin_scenarios, load_scenario
from layerbench.testing import userns_session

from ..conftest import first_append_ns, require
from ..image_files import DEV, D, F, Layout, tar_bytes

pytestmark = pytest.mark.mounts
MiB = 1 << 20
NAME = "overlay2-rootless"


def _in_session(tmp_path: Path, fn: Callable[[Driver], Any], **kw: Any) -> Any:
    """`fn(driver)` inside the namespace, the driver set up there on a fresh store under tmp_path."""
    require(NAME)

    def body(driver: Driver) -> Any:
        driver.setup()
        try:
            return fn(driver)
        finally:
            driver.close()

    with userns_session(default_plugins().driver(NAME), tmp_path / "store", 1 << 30) as driver:
        return userns.run_in_userns(body, driver, expose=[driver.home.parent], **kw)


def _image(driver: Driver) -> str:
    root = driver.create_layer("base", None)
    (root / "small.bin").write_bytes(os.urandom(4096))
    with open(root / "big.bin", "wb") as f:
        f.writelines(os.urandom(MiB) for _ in range(64))
    driver.seal_layer("base")
    return "base"


def _mounted_anywhere(path: Path) -> list[str]:
    """Mount points at or below `path` in every mount namespace of every process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found += [f"{pid}:{point}" for point in mountinfo.points_below(str(path), pid=pid)]
        except OSError:
            continue
    return found


def _wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@contextmanager
def _held(tmp_path: Path) -> Iterator[tuple[int, dict[str, Any], Path]]:
    """A container mounted and written in the namespace, held there while the test looks from outside.

    Yields the child's pid, what it saw inside, and the container's upper dir.
    """
    require(NAME)
    home = tmp_path / "store" / "mnt" / NAME

    def hold(driver: Driver) -> None:
        driver.create_container("c", _image(driver))
        root = driver.mount("c")
        (root / "mine").write_bytes(b"y")
        (root / "new").write_bytes(b"x")
        os.chown(root / "new", 7, 8)
        with open("/proc/self/uid_map") as f:
            seen = {
                "pid": os.getpid(),
                "uid": os.getuid(),
                "euid": os.geteuid(),
                "owner": os.stat(root / "mine").st_uid,
                "map": f.read().split(),
            }
        (driver.home / "seen.json").write_text(json.dumps(seen))
        _wait_for(driver.home / "release")
        driver.unmount("c")

    thread = threading.Thread(target=_in_session, args=(tmp_path, hold))
    thread.start()
    try:
        _wait_for(home / "seen.json")
        seen = json.loads((home / "seen.json").read_text())
        yield seen["pid"], seen, home / "c" / "diff"
    finally:
        if home.is_dir():
            (home / "release").touch()
        thread.join(60)
    assert not thread.is_alive()
    assert not _mounted_anywhere(tmp_path), "a mount outlived the run"


def test_the_mount_lives_only_in_the_childs_namespace(tmp_path: Path) -> None:
    """During a run the container's overlay (with userxattr) is in the child's mountinfo, not in ours."""
    with _held(tmp_path) as (pid, _, upper):
        merged = str(upper.parent / "merged")
        assert merged not in mountinfo.mount_points(), "the container's mount leaked into the parent's namespace"
        mount = next(m for m in mountinfo.mounts(pid) if m.point == merged)
        assert mount.fstype == "overlay" and "userxattr" in mount.super_options.split(","), mount


def test_io_runs_as_namespace_root_and_lands_as_the_unprivileged_uid(tmp_path: Path) -> None:
    """Inside: uid 0 of a mapped range. On the host: an unprivileged process, files owned by 100000+."""
    with _held(tmp_path) as (pid, seen, upper):
        assert (seen["uid"], seen["euid"], seen["owner"]) == (0, 0, 0)
        assert seen["map"] == ["0", str(userns.USERNS_ID), str(userns.USERNS_COUNT)]
        with open(f"/proc/{pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert uids == [str(userns.USERNS_ID)] * 4, f"the child runs as {uids} on the host"
        mine, new = os.lstat(upper / "mine"), os.lstat(upper / "new")
        assert (mine.st_uid, mine.st_gid) == (userns.USERNS_ID, userns.USERNS_ID)
        assert (new.st_uid, new.st_gid) == (userns.USERNS_ID + 7, userns.USERNS_ID + 8)


def test_first_append_to_a_big_lower_file_copies_it_up(tmp_path: Path) -> None:
    """Copy-up happens in the rootless overlay too: 64 MiB first append costs > 10x a 4 KiB one."""

    def measure(driver: Driver) -> float:
        image = _image(driver)
        small, big = [], []
        for i in range(5):
            driver.create_container(f"c{i}", image)
            root = driver.mount(f"c{i}")
            small.append(first_append_ns(root / "small.bin"))
            big.append(first_append_ns(root / "big.bin"))
            assert os.path.getsize(driver.home / f"c{i}" / "diff" / "big.bin") == 64 * MiB + 1
            driver.unmount(f"c{i}")
            driver.remove(f"c{i}")
        return min(big) / min(small)  # the fastest of five: copy-up fsyncs, and a busy disk only adds

    ratio = _in_session(tmp_path, measure)
    assert ratio > 10, f"{NAME}: first append to 64 MiB / 4 KiB = {ratio:.1f}"


def test_a_killed_child_leaves_nothing_mounted(tmp_path: Path) -> None:
    """A child past its time limit is killed; its namespace, and the overlay in it, are gone."""

    def hang(driver: Driver) -> None:
        driver.create_container("c", _image(driver))
        driver.mount("c")
        (driver.home / "mounted").touch()
        time.sleep(600)

    with pytest.raises(userns.UsernsError, match="did not finish in time"):
        _in_session(tmp_path, hang, timeout_s=10)
    assert not _mounted_anywhere(tmp_path), "the killed child's mount outlived it"


def test_an_error_in_the_namespace_comes_back_with_its_type(tmp_path: Path) -> None:
    def fail(driver: Driver) -> None:
        driver.mount("no-such-container")

    with pytest.raises(FileNotFoundError) as info:
        _in_session(tmp_path, fail)
    assert any("in the user namespace" in note for note in getattr(info.value, "__notes__", []))
    assert not _mounted_anywhere(tmp_path)


def test_a_user_without_root_maps_only_itself(tmp_path: Path) -> None:
    """Started by an ordinary user, the namespace maps that one uid and overlay still mounts."""
    require(NAME)
    work = Path(tempfile.mkdtemp(prefix="layerbench-user-"))
    user = userns.USERNS_ID + 1
    os.chown(work, user, user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child exits)
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(user, user, user)
            os.setresuid(user, user, user)

            def check(root: str) -> str:
                _trial(root)
                with open("/proc/self/uid_map") as f:
                    return " ".join(f.read().split())

            os.write(w, userns.run_in_userns(check, str(work), timeout_s=30).encode())
            code = 0
        except BaseException as exc:  # noqa: BLE001  shown by the assertion below
            os.write(w, repr(exc).encode()[:1000])
        finally:
            os._exit(code)
    os.close(w)
    try:
        answer = os.read(r, 1000).decode()
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(r)
        shutil.rmtree(work)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    assert answer == f"0 {user} 1"


def test_a_rootless_cell_runs_in_the_runner(tmp_path: Path) -> None:
    """run_cell: the image is built and sampled in the namespace; the results come back."""
    out = runner.run_cell(_cell(tmp_path), tmp_path / "cell", Sampling(samples=2, warmup=0, min_time_s=0, cold=False))
    assert out["status"] == "ok", out["error"]
    assert out["samples"] == 2 and len(out["metrics"]["copy_up_ns"]["samples"]) == 2
    assert out["inspect"]["container"]["UpperDir"].endswith("/diff")
    assert not (tmp_path / "cell").exists() and not _mounted_anywhere(tmp_path)


def _cell(tmp_path: Path) -> runner.Cell:
    require(NAME)
    scenario = load_scenario(builtin_scenarios()["copy-up"], {"file_size": [4096]})
    return runner.Cell(scenario, default_plugins().driver(NAME), scenario.param_sets()[0], "ext4")


def test_a_rootless_cell_past_its_time_limit_is_killed_and_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cell's time limit fires in the parent; the child (mid-mount) is killed, the store released."""

    def hang(run: Any) -> None:
        driver = run.session.start()
        driver.create_layer("base", None)
        driver.seal_layer("base")
        driver.create_container("c", "base")
        driver.mount("c")
        time.sleep(600)

    monkeypatch.setattr(cell, "_measure", hang)  # the forked child runs it
    sampling = Sampling(samples=1, warmup=0, min_time_s=0, cold=False, timeout_s=5)
    out = runner.run_cell(_cell(tmp_path), tmp_path / "cell", sampling)
    assert out["status"] == "error" and "time limit" in out["error"], out["error"]
    assert not (tmp_path / "cell").exists() and not _mounted_anywhere(tmp_path)


def test_a_failing_rootless_cell_keeps_its_partial_samples_and_error_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(run: Any) -> None:
        run.recorder.record("copy_up_ns", 123)
        raise PermissionError(13, "injected in the namespace")

    monkeypatch.setattr(cell, "_measure", fail)
    out = runner.run_cell(_cell(tmp_path), tmp_path / "cell")
    assert out["status"] == "error" and out["error"].startswith("PermissionError:"), out["error"]
    assert out["metrics"]["copy_up_ns"]["samples"] == [123]


def test_a_device_node_in_an_image_is_skipped_not_a_permission_error(tmp_path: Path) -> None:
    """Root in a user namespace makes no device node: the layer applies without it, and the skip is
    named in its LayerStats (issue 20, L7; it was a bare PermissionError that failed the cell)."""
    require(NAME)
    layer = tar_bytes(D("dev/"), DEV("dev/null", tarfile.CHRTYPE, 1, 3), F("etc/conf", b"kept"))
    lay = Layout()
    lay.index([lay.manifest([layer], how=("gzip",))])
    lay.write_dir(tmp_path / "image")
    os.chmod(tmp_path, 0o755)  # the image is read by the namespace's root, an unprivileged uid on the host

    def body(driver: Driver) -> tuple[list[str], list[str], bytes]:
        driver.setup()
        try:
            (blob,) = read_image(tmp_path / "image")
            root = driver.create_layer("l0", None)
            stats = apply_blob(root, blob, driver.layer_format, symlinks="relative", opaque_xattr=driver.opaque_xattr)
            return stats.skipped, sorted(os.listdir(root / "dev")), (root / "etc" / "conf").read_bytes()
        finally:
            driver.close()

    with userns_session(default_plugins().driver(NAME), tmp_path / "store") as driver:
        skipped, dev, conf = userns.run_in_userns(body, driver, expose=[driver.home.parent, tmp_path / "image"])
    assert skipped == ["dev/null: device nodes need root in the initial user namespace"]
    assert dev == [] and conf == b"kept"
    assert not _mounted_anywhere(tmp_path)
