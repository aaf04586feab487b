"""The skeleton third-party driver (docs/examples/layerbench-skeleton), installed by .ci/setup.

It shows up in `layerbench drivers` and `layerbench plugins`, passes the conformance
suite the way a driver author runs it, and runs a scenario.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.cli import main

try:
    metadata.distribution("layerbench-skeleton")
except metadata.PackageNotFoundError:
    pytest.skip(
        "layerbench-skeleton is not installed: pip install ./docs/examples/layerbench-skeleton (.ci/setup does)",
        allow_module_level=True,
    )


@pytest.mark.mounts
def test_skeleton_is_listed_by_drivers_and_plugins() -> None:
    rows = json.loads(CliRunner().invoke(main, ["drivers", "--json"]).stdout)
    row = next(r for r in rows if r["name"] == "skeleton")
    assert row["available"] and row["style"] == "copy" and row["plugin"].startswith("skeleton")
    plugins = json.loads(CliRunner().invoke(main, ["plugins"]).stdout)
    mine = next(p for p in plugins if p["module"] == "layerbench_skeleton")
    assert mine["drivers"] == ["skeleton"] and mine["version"] == "0.1.0"


@pytest.mark.mounts
def test_conformance_suite_passes_as_a_driver_author_runs_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "t"),
            "--pyargs",
            "layerbench.testing.conformance",
            "--layerbench-driver",
            "skeleton",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-500:]


@pytest.mark.mounts
def test_a_scenario_runs_on_the_skeleton(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            "copy-up",
            "-d",
            "skeleton",
            "-p",
            "file_size=4096",
            "-p",
            "depth=1",
            "-p",
            "mode=append",
            "--samples",
            "2",
            "--warmup",
            "0",
            "--results-dir",
            str(tmp_path / "results"),
            "--work-root",
            str(tmp_path / "work"),
            "--label",
            "skeleton",
        ],
    )
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").rglob("*_skeleton.json")
    doc = json.loads(path.read_text())
    (cell,) = doc["cells"]
    assert cell["driver"] == "skeleton" and cell["status"] == "ok", cell.get("error")
    assert len(cell["metrics"]["copy_up_ns"]["samples"]) == 2
