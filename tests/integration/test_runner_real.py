"""The runner on real drivers: every cell ok, and nothing left after an error or Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbench.drivers import Overlay2Driver
from layerbench.kernel import mountinfo
from layerbench.run.runner import Cell, RunConfig, run, run_cell
from layerbench.scenario import load_scenario

from ..conftest import require
from ..test_cli import TINY

pytestmark = pytest.mark.mounts


def _mounts_under(path: Path) -> list[str]:
    return mountinfo.points_below(str(path))


def test_run_on_every_real_driver(tmp_path: Path) -> None:
    for name in ("overlay2", "btrfs", "vfs"):
        require(name)
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
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
def test_a_cell_stopped_mid_mount_releases_everything(driver: type[Overlay2Driver], tmp_path: Path) -> None:
    require("overlay2")
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    s = load_scenario(scenario)
    cell = Cell(scenario=s, driver=driver, params=s.param_sets()[0], backing="ext4")
    if driver is _InterruptedOverlay:
        with pytest.raises(KeyboardInterrupt):
            run_cell(cell, tmp_path / "cell")
    else:
        assert "injected failure" in run_cell(cell, tmp_path / "cell")["error"]
    assert _mounts_under(tmp_path) == []
    assert not (tmp_path / "cell").exists()
