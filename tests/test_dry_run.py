"""`layerbench run --dry-run` and runner.plan: the cells, their disk estimates and past times, nothing made."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.cli import main
from layerbench.run import machine
from layerbench.run.estimates import estimate_bytes
from layerbench.run.plan import RunConfig, plan
from layerbench.run.runner import run

from .conftest import TINY


def _scenario(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.mark.mounts
def test_plan_times_cells_by_their_past_runs_here(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("null",),
        results_dir=tmp_path / "res",
        work_root=tmp_path / "work",
        order="planned",
        target_ci=0.0,
    )
    before = plan(config)
    assert [(pc.cell.params, pc.cell.backing, pc.seconds) for pc in before.cells] == [
        ({"containers": 1}, "dir", None),
        ({"containers": 2}, "dir", None),
    ]  # no history: unknown
    assert before.history == 0 and [pc.disk_bytes for pc in before.cells] == [
        estimate_bytes(pc.cell) for pc in before.cells
    ]
    first, _ = run(config)
    second, _ = run(config)
    after = plan(config)
    assert after.history == 2
    for pc in after.cells:
        took = [c["duration_s"] for doc in (first, second) for c in doc["cells"] if c["params"] == pc.cell.params]
        assert pc.seconds == statistics.median(took) and len(took) == 2
    # other parameters are other cells: no history
    wider = plan(
        RunConfig(
            scenarios=(str(scenario),),
            drivers=("null",),
            results_dir=tmp_path / "res",
            overrides={"containers": [2, 3]},
        )
    )
    assert [(pc.cell.params["containers"], pc.seconds is None) for pc in wider.cells] == [(2, False), (3, True)]


@pytest.mark.mounts
def test_plan_ignores_another_machines_results_and_unreadable_files(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("null",),
        results_dir=tmp_path / "res",
        work_root=tmp_path / "work",
        target_ci=0.0,
    )
    _, path = run(config)
    (tmp_path / "res" / "elsewhere").mkdir()
    path.rename(tmp_path / "res" / "elsewhere" / path.name)
    (tmp_path / "res" / machine.machine_name() / "notes.json").write_text("{not json")
    p = plan(config)
    assert p.history == 1 and all(pc.seconds is None for pc in p.cells)


def test_dry_run_prints_the_plan_and_makes_nothing(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    r = CliRunner().invoke(
        main,
        [
            "run",
            str(scenario),
            "-d",
            "null",
            "--results-dir",
            str(tmp_path / "res"),
            "--work-root",
            str(tmp_path / "work"),
            "--dry-run",
        ],
    )
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "scenario",
        "driver",
        "params",
        "backing",
        "disk",
        "(est.)",
        "time",
        "(past",
        "runs",
        "here)",
    ]
    assert lines[2].split()[:4] == ["tiny", "null", "containers=1", "dir"] and lines[2].endswith("unknown")
    assert lines[3].split()[:4] == ["tiny", "null", "containers=2", "dir"]
    assert any(line.startswith("2 cells; the largest store needs ") for line in lines)
    assert "time: unknown; from 0 results files of this machine" in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]  # no results dir, no work root


@pytest.mark.mounts
def test_dry_run_refuses_resume_in_one_line(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    _, path = run(
        RunConfig(
            scenarios=(str(scenario),),
            drivers=("null",),
            results_dir=tmp_path / "res",
            work_root=tmp_path / "work",
            target_ci=0.0,
        )
    )
    r = CliRunner().invoke(main, ["run", "--resume", str(path), "--dry-run"])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines()[-1].endswith("--dry-run plans a new run here; it does not take --resume")


def _dry_cold_start(tmp_path: Path) -> list[str]:
    r = CliRunner().invoke(
        main,
        [
            "run",
            "cold-start",
            "--long",
            "-d",
            "null",
            "--dry-run",
            "--results-dir",
            str(tmp_path / "res"),
            "--work-root",
            str(tmp_path / "work"),
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert "building image" not in r.stderr
    return r.stdout.splitlines()


def test_dry_run_of_cold_start_builds_no_debian_image(tmp_path: Path) -> None:
    lines = _dry_cold_start(tmp_path)
    rows = [x for x in lines if x.startswith("cold-start")]
    assert len(rows) == 4 and all("image not built" in x for x in rows)  # python and busybox, two links
    assert "4 cells; their disk is unknown" in " ".join(lines)
    assert "4 cells' images are built on the first run (not now): their disk is known then" in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no work root, no image cache, no results


def test_dry_run_sizes_a_debian_image_built_before(tmp_path: Path) -> None:
    from layerbench.images.image import synthetic_image
    from layerbench.images.oci_write import write_layout

    cache = tmp_path / "work" / "debian-cache"
    cache.mkdir(parents=True)
    write_layout(synthetic_image(2, 30, 3_000_000), cache / f"busybox-{'a' * 24}-gzip", "gzip")
    lines = _dry_cold_start(tmp_path)
    busybox = [x for x in lines if "recipe=busybox" in x]
    python = [x for x in lines if "recipe=python" in x]
    assert busybox and python and all("MiB" in x for x in busybox) and all("image not built" in x for x in python)
    assert "2 cells' images are built on the first run (not now): their disk is known then" in lines
