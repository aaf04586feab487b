"""The runner on real drivers: every cell ok, and nothing left after an error or Ctrl-C."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from layerbench.analysis import results
from layerbench.drivers import Overlay2Driver, VfsDriver
from layerbench.kernel import mountinfo
from layerbench.run import plan as plan_module
from layerbench.run.progress import CellEvent
from layerbench.run.runner import Cell, RunConfig, run, run_cell
from layerbench.scenario import load_scenario

from ..conftest import require

pytestmark = pytest.mark.mounts


def _mounts_under(path: Path) -> list[str]:
    return mountinfo.points_below(str(path))


def test_run_on_every_real_driver(tiny: Path, tmp_path: Path) -> None:
    for name in ("overlay2", "btrfs", "vfs"):
        require(name)
    scenario = tiny
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("overlay2", "btrfs", "vfs"),
        results_dir=tmp_path / "res",
        work_root=tmp_path / "work",
    )
    doc, path = run(config)
    assert path.exists()
    assert {(c["driver"], c["status"]) for c in doc["cells"]} == {("overlay2", "ok"), ("btrfs", "ok"), ("vfs", "ok")}
    backings = {c["driver"]: c["backing"] for c in doc["cells"]}
    assert backings == {"overlay2": "ext4", "btrfs": "btrfs", "vfs": "ext4"}
    overlay = next(c for c in doc["cells"] if c["driver"] == "overlay2")
    assert set(overlay["inspect"]["container"]) == {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}
    assert doc["helpers"]["mkfs.btrfs"]
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".layerbench-work-root"]  # runs left nothing
    assert _mounts_under(tmp_path) == []


class _InterruptedOverlay(Overlay2Driver):
    """Mounts for real, then the user presses Ctrl-C."""

    def mount(self, container_id: str) -> Path:
        super().mount(container_id)
        raise KeyboardInterrupt


class _FailingOverlay(Overlay2Driver):
    def mount(self, container_id: str) -> Path:
        super().mount(container_id)
        raise OSError("injected failure")


@pytest.mark.parametrize("driver", [_InterruptedOverlay, _FailingOverlay])
def test_a_cell_stopped_mid_mount_releases_everything(tiny: Path, driver: type[Overlay2Driver], tmp_path: Path) -> None:
    require("overlay2")
    scenario = tiny
    s = load_scenario(scenario)
    cell = Cell(scenario=s, driver=driver, params=s.param_sets()[0], backing="ext4")
    if driver is _InterruptedOverlay:
        with pytest.raises(KeyboardInterrupt):
            run_cell(cell, tmp_path / "cell")
    else:
        assert "injected failure" in run_cell(cell, tmp_path / "cell")["error"]
    assert _mounts_under(tmp_path) == []
    assert not (tmp_path / "cell").exists()


class _SlowToCloseVfs(VfsDriver):
    """Records when its teardown runs, and takes a while about it."""

    log: ClassVar[list[tuple[str, float, str]]] = []

    def close(self) -> None:
        self.log.append(("close-start", time.monotonic(), threading.current_thread().name))
        time.sleep(0.3)
        super().close()
        self.log.append(("close-end", time.monotonic(), threading.current_thread().name))

    def create_container(self, container_id: str, layer_id: str) -> None:
        self.log.append(("sample", time.monotonic(), threading.current_thread().name))
        super().create_container(container_id, layer_id)


@pytest.mark.parametrize("overlap", [True, False])
def test_a_cells_teardown_overlaps_the_next_set_up_never_a_sample(
    tiny: Path, overlap: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("vfs")
    scenario = tiny
    _SlowToCloseVfs.log = []
    monkeypatch.setattr(plan_module, "select_drivers", lambda plugins, names, *_: ([_SlowToCloseVfs], {}))
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("vfs",),
        results_dir=tmp_path / "res",
        work_root=tmp_path / "work",
        order="planned",
        overlap_teardown=overlap,
    )
    doc, path = run(config)
    assert [c["status"] for c in doc["cells"]] == ["ok", "ok"]
    assert json.loads(path.read_text())["cells"] == doc["cells"]  # the file has every teardown's figures
    log = _SlowToCloseVfs.log
    closes = [(t, who) for what, t, who in log if what == "close-start"]
    assert {who for _, who in closes} == ({"layerbench-teardown"} if overlap else {"MainThread"})
    first_close_end = next(t for what, t, _ in log if what == "close-end")
    second_cell_samples = [t for what, t, _ in log if what == "sample" and t > closes[0][0]]
    assert second_cell_samples and min(second_cell_samples) > first_close_end  # no sample beside a teardown
    for c in doc["cells"]:  # the teardown's seconds reach the results, the last cell's too
        assert c["time_split_s"]["teardown"] >= 0.3
        # its parts add up to its time; the next cell's wait for this teardown is not counted twice
        assert abs(c["duration_s"] - sum(c["time_split_s"].values())) <= 0.01
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".layerbench-work-root"]
    assert _mounts_under(tmp_path) == []


def test_a_run_stopped_by_a_refusal_between_cells_is_saved_interrupted_with_its_finished_cells(
    tiny: Path, tmp_path: Path
) -> None:
    """Someone plants a symlink where the next cell's directory goes while the first cell runs: the run
    will not make its directory there (FileExistsError: never through a link) and stops, and its results
    file says `interrupted` (it was left `running`), keeps the finished cell for --resume and names the
    run's work root; nothing is left mounted, nothing is written elsewhere."""
    require("vfs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    work = tmp_path / "work"

    def plant(event: CellEvent) -> None:
        if event.kind == "started" and event.index == 1:
            (run_dir,) = work.glob("run-*")
            os.symlink(elsewhere, run_dir / "cell2")

    config = RunConfig(
        scenarios=(str(tiny),), drivers=("vfs",), results_dir=tmp_path / "res", work_root=work, order="planned"
    )
    with pytest.raises(FileExistsError, match="cell2"):
        run(config, events=plant)
    (path,) = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)
    assert doc["status"] == "interrupted" and doc["finished_utc"]
    assert [c["status"] for c in doc["cells"]] == ["ok"] and doc["work_root"] == str(work)
    assert os.listdir(elsewhere) == [] and _mounts_under(tmp_path) == []
    assert [p.name for p in work.iterdir()] == [".layerbench-work-root"]
