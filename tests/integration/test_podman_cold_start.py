"""The cold start through Podman itself: `podman pull` from the cell's registry, `podman create`, `init`, `start`.

A podman/overlay cell of the cold-start scenario (busybox, loopback): Podman pulls the
image from the harness's docker-registry (the bytes its store read equal the image's
compressed layers), starts the entrypoint to its ready line, and leaves nothing after
the cell; a run SIGKILLed while Podman's container runs leaves nothing once `cleanup`
has run (conmon and the container's process are in the ledger).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbench.drivers.podman import PodmanOverlay
from layerbench.kernel import mountinfo
from layerbench.kernel.netshape import parse_link
from layerbench.run import ready
from layerbench.run.ready import NotReady
from layerbench.run.registry import registry

from .. import engine_cells
from ..conftest import require

pytestmark = pytest.mark.mounts


def _need_all() -> None:
    require("podman/overlay")
    engine_cells.need_registry_and_crun()


def _in_host_run(work: Path) -> list[str]:
    """crun state dirs in the machine's /run naming `work` (Podman's crun keeps its state on the store)."""
    crun = Path("/run/crun")
    found = []
    for state in crun.iterdir() if crun.is_dir() else []:
        try:
            if str(work) in (state / "config.json").read_text(errors="replace"):
                found.append(str(state))
        except OSError:
            continue
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("driver", ["podman/overlay", "podman/btrfs"])
def test_a_podman_cold_start_cell_pulls_from_the_registry_and_runs_to_ready(
    driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_all()
    require(driver)
    work = tmp_path / "work"
    layout = engine_cells.layout(work, "busybox")
    cell, noted = engine_cells.cold_start_cell(driver, work, tmp_path / "results", monkeypatch)
    # Podman read every compressed byte of the image from the registry, and only those; what the start read of
    # the image's layer files (busybox: nearly all; on btrfs, of the container's snapshot), not of its records
    engine_cells.check_engine_phases(cell, layout)
    assert cell["inspect"]["container"]["GraphDriver"] == driver.removeprefix("podman/")
    # the root Podman mounted (overlay) or bound (a btrfs subvolume of the store), as its process saw it
    seen = [o for step in cell["outcomes"].values() for o in step if o.startswith("container root:")]
    assert seen and all("(nodev,nosuid)" in o for o in seen), cell["outcomes"]
    # the holder, and for each of the three containers conmon and its process: made, then released
    makes = [p for op, kind, p in noted if op == "make" and kind == "daemon"]
    assert len(makes) >= 7 and sorted(makes) == sorted(
        p for op, kind, p in noted if op == "release" and kind == "daemon"
    )
    assert mountinfo.points_below(str(tmp_path)) == []
    assert engine_cells.tagged(work) == [] and _in_host_run(work) == []


def test_a_sigkilled_podman_run_leaves_nothing_after_cleanup(tmp_path: Path) -> None:
    _need_all()
    # conmon carries the run's tag too
    work, left, out = engine_cells.sigkill_while_serving(
        "podman/overlay", "podman", tmp_path, lambda pids: any(_comm(p) == "conmon" for p in pids)
    )
    assert left  # SIGKILL left Podman's processes: cleanup's work is real
    engine_cells.check_cleaned(work, out)
    assert _in_host_run(work) == []


def test_podmans_exit_status_reaches_the_ready_wait(tmp_path: Path) -> None:
    """A process that exits 3 is not ready by `exit`: the status comes through `podman start --attach`,
    whose end (after Podman's cleanup of the container) ends the wait; one that exits 0 is ready."""
    _need_all()
    layout = engine_cells.layout(tmp_path / "work", "busybox")
    home = tmp_path / "a-store-path-as-deep-as-a-cells-is" / "podman" / "overlay"
    home.mkdir(parents=True)
    driver = PodmanOverlay(home)
    driver.setup()
    try:
        with registry(parse_link("loopback"), tmp_path / "reg", tmp_path / "storage", None, "tpexit") as reg:
            made: list[str] = []
            pulled = driver.pull_image(reg.push(layout), "img", made)
        assert made == ["img"] and sum(pulled.fetched.values()) == engine_cells.compressed_layers(layout)
        for name, script, status in (("ok", "echo done", 0), ("bad", "echo failing; exit 3", 3)):
            box = driver.run_image(name, "img", "crun", ("/bin/sh", "-c", script), (), "/")
            try:
                box.make()
                box.create()
                box.noted()
                box.begin()
                if status:
                    with pytest.raises(NotReady, match="status 3"):
                        ready.wait_ready(box, "exit", 60)
                else:
                    assert "done" in ready.wait_ready(box, "exit", 60)
                assert box.exit_status() == status
            finally:
                box.stop()
                driver.remove(name)
        with pytest.raises(RuntimeError, match="crun"):
            driver.run_image("builtin", "img", "builtin", ("true",), (), "/")
    finally:
        driver.close()
    assert _in_host_run(home) == []


def test_podman_fetches_only_the_layers_its_store_lacks(tmp_path: Path) -> None:
    """busybox-httpd after busybox (the same base layer): Podman fetches only the httpd layer; the same image
    pulled twice is two items of one Podman image, each removable."""
    _need_all()
    busybox, httpd = (
        engine_cells.layout(tmp_path / "work", "busybox"),
        engine_cells.layout(tmp_path / "work", "busybox-httpd"),
    )
    home = tmp_path / "home"
    home.mkdir()
    driver = PodmanOverlay(home)
    driver.setup()
    try:
        with registry(parse_link("loopback"), tmp_path / "reg", tmp_path / "storage", None, "tpshare") as reg:
            made: list[str] = []
            first = driver.pull_image(reg.push(busybox), "a", made)
            second = driver.pull_image(reg.push(httpd), "b", made)
            again = driver.pull_image(reg.push(busybox), "c", made)
        base, *_ = engine_cells.layer_digests(busybox)
        assert base in first.fetched and sum(first.fetched.values()) == engine_cells.compressed_layers(busybox)
        assert base not in second.fetched and set(second.fetched) == set(engine_cells.layer_digests(httpd)[1:])
        assert again.fetched == {} and made == ["a", "b", "c"]
        for item in ("c", "a", "b"):
            driver.remove(item)
        assert driver.podman("images", "-q") == ""
    finally:
        driver.close()
