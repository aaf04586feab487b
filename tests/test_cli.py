from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from layerbench.harness import results
from layerbench.harness.cli import main
from layerbench.harness.plugins import default_plugins

TINY = """
name = "tiny"
description = "Two containers and a write, on a small image."
[params]
containers = [1, 2]
[image]
layers = 3
files = 20
bytes = 100000
[[image.file]]
path = "t.bin"
size = 8192
[repeat]
samples = 3
warmup = 1
[[step]]
op = "start"
count = "${containers}"
[[step]]
op = "append"
path = "t.bin"
measure = "copy_up_ns"
[[step]]
op = "usage"
"""


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_unknown_driver_is_one_line_exit_2() -> None:
    code, out, err = invoke("run", "--driver", "nope")
    assert code == 2
    known = ", ".join(sorted(default_plugins().registry.drivers))
    assert err.strip() == f"layerbench: error: unknown driver 'nope'; known drivers: {known}"


def test_unknown_scenario_is_one_line_exit_2() -> None:
    code, _, err = invoke("run", "nosuch")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "built-in scenarios: commit, copy-up," in err


def test_bad_param_is_one_line() -> None:
    code, _, err = invoke("run", "copy-up", "--param", "file_size=1/2")
    assert code == 2 and "expected name=value" in err and "Traceback" not in err
    code, _, err = invoke("run", "copy-up", "--param", "file_size=big")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "copy-up.toml: image.file[0].size: parameter file_size = 'big' is not a size in bytes" in err


def test_drivers_lists_style_and_availability() -> None:
    code, out, _ = invoke("drivers", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["overlay2"]["style"] == "union" and rows["vfs"]["style"] == "copy"
    assert rows["btrfs"]["style"] == "snapshot" and rows["null"]["available"] is True
    for row in rows.values():
        assert row["available"] or row["reason"]


def test_scenarios_lists_descriptions() -> None:
    code, out, _ = invoke("scenarios")
    assert code == 0 and "copy-up" in out and "copies the whole file up" in out


def test_run_null_end_to_end_writes_results_and_csv(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    code, out, err = invoke(
        "run", str(scenario), "--driver", "null", "--results-dir", str(tmp_path / "res"),
        "--work-root", str(tmp_path / "work"), "--label", "t", "--export-csv", "-",
    )
    assert code == 0, err
    assert "== tiny" in out  # the comparison table
    rows = list(csv.DictReader(io.StringIO(out[out.index("scenario,driver"):])))
    metrics = {(r["params"], r["metric"]): r for r in rows}
    assert metrics[("containers=2", "startup_ns")]["n"] == "6"  # 3 samples x 2 containers
    assert metrics[("containers=1", "copy_up_ns")]["unit"] == "ns"
    (path,) = (tmp_path / "res").rglob("*_t.json")
    doc = results.read(path)
    assert doc["schema_version"] == results.SCHEMA_VERSION and doc["status"] == "finished"
    assert doc["scenarios"]["tiny"]["sha256"] and doc["machine"]["kernel"]
    assert [c["status"] for c in doc["cells"]] == ["ok", "ok"]
    assert len(doc["cells"][0]["metrics"]["copy_up_ns"]["samples"]) == 3
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".layerbench-work-root"]  # runs left nothing  # the cell's store is gone


def test_failing_cell_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(TINY.replace('path = "t.bin"\nmeasure', 'path = "missing.bin"\nmeasure'))
    code, out, err = invoke("run", str(scenario), "--driver", "null", "--results-dir", str(tmp_path / "res"),
                            "--work-root", str(tmp_path / "work"))
    assert code == 0
    (path,) = (tmp_path / "res").rglob("*.json")
    cells = results.read(path)["cells"]
    assert [c["status"] for c in cells] == ["error", "error"]
    assert "FileNotFoundError" in cells[0]["error"]
    assert "error: tiny null" in out
