from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.analysis import results
from layerbench.cli import main
from layerbench.plugins import default_plugins


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_unknown_driver_is_one_line_exit_2() -> None:
    code, _, err = invoke("run", "--driver", "nope")
    assert code == 2
    known = ", ".join(sorted(default_plugins().registry.drivers))
    assert err.strip() == f"layerbench: error: unknown driver 'nope'; known drivers: {known}"


def test_unknown_scenario_is_one_line_exit_2() -> None:
    code, _, err = invoke("run", "nosuch")
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "built-in scenarios: cold-start, commit, container-remove, copy-up," in err
    )


def test_bad_param_is_one_line() -> None:
    code, _, err = invoke("run", "copy-up", "--param", "file_size=1/2")
    assert code == 2 and "expected name=value" in err and "Traceback" not in err
    code, _, err = invoke("run", "copy-up", "--param", "file_size=big")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "copy-up.toml: image.file[0].size: parameter file_size = 'big' is not a size in bytes" in err


def test_a_link_with_a_delay_is_a_param_value() -> None:
    from layerbench.run.config import parse_param

    assert parse_param("link=loopback,100mbit+20ms") == ("link", ["loopback", "100mbit+20ms"])


@pytest.mark.mounts
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


@pytest.mark.mounts
def test_run_null_end_to_end_writes_results_and_csv(tiny: Path, tmp_path: Path) -> None:
    scenario = tiny
    code, out, err = invoke(
        "run",
        str(scenario),
        "--driver",
        "null",
        "--results-dir",
        str(tmp_path / "res"),
        "--work-root",
        str(tmp_path / "work"),
        "--label",
        "t",
        "--export-csv",
        "-",
        "--target-ci",
        "0",
    )
    assert code == 0, err
    assert "== tiny" in out  # the comparison table
    header = out.rindex("\n", 0, out.index("scenario,driver")) + 1  # the CSV's header line, whatever comes first
    rows = list(csv.DictReader(io.StringIO(out[header:])))
    metrics = {(r["params"], r["metric"]): r for r in rows}
    assert metrics[("containers=2", "startup_ns")]["n"] == "6"  # 3 samples x 2 containers
    assert metrics[("containers=1", "copy_up_ns")]["unit"] == "ns"
    (path,) = (tmp_path / "res").rglob("*_t.json")
    doc = results.read(path)
    assert doc["schema_version"] == results.SCHEMA_VERSION and doc["status"] == "finished"
    assert doc["scenarios"]["tiny"]["sha256"] and doc["machine"]["kernel"]
    assert [c["status"] for c in doc["cells"]] == ["ok", "ok"]
    assert len(doc["cells"][0]["metrics"]["copy_up_ns"]["samples"]) == 3
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".layerbench-work-root"]  # the cells left nothing


@pytest.mark.mounts
def test_failing_cell_is_recorded_and_the_run_goes_on(tiny: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(tiny.read_text().replace('path = "t.bin"\nmeasure', 'path = "missing.bin"\nmeasure'))
    code, out, err = invoke(
        "run",
        str(scenario),
        "--driver",
        "null",
        "--results-dir",
        str(tmp_path / "res"),
        "--work-root",
        str(tmp_path / "work"),
        "--order",
        "planned",
    )
    assert code == 1  # a CI job can gate on it
    assert err.splitlines()[-1] == (
        "layerbench: 2 of 2 cells failed: tiny null containers=1 on dir; tiny null containers=2 on dir"
    )
    (path,) = (tmp_path / "res").rglob("*.json")
    cells = results.read(path)["cells"]
    assert [c["status"] for c in cells] == ["error", "error"]
    assert cells[0]["error"].startswith("step[1] append: FileNotFoundError: ")  # names the step
    assert "error: tiny null" in out


@pytest.mark.mounts
def test_a_run_with_some_cells_failing_exits_1_naming_only_those(tiny: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "half.toml"
    scenario.write_text(
        tiny.read_text()
        .replace('path = "t.bin"\nmeasure', 'path = "${f}"\nmeasure')
        .replace("containers = [1, 2]", 'containers = [1]\nf = ["t.bin", "missing.bin"]')
    )
    code, _, err = invoke(
        "run",
        str(scenario),
        "--driver",
        "null",
        "--results-dir",
        str(tmp_path / "res"),
        "--work-root",
        str(tmp_path / "work"),
    )
    assert code == 1
    assert err.splitlines()[-1] == "layerbench: 1 of 2 cells failed: tiny null containers=1;f=missing.bin on dir"


SLOW = """
name = "slow"
description = "A cell of one sample, then one of a million (minutes)."
[[sets]]
n = 1
[[sets]]
n = 1000000
[image]
layers = 1
files = 3
bytes = 100
[repeat]
samples = "${n}"
warmup = 0
[[step]]
op = "start"
"""
LAYERBENCH = [sys.executable, "-c", "from layerbench.cli import main; main()"]
# the signals a test sends at their defaults, whatever pytest was started with (a shell's background job
# ignores SIGINT, and its children inherit that): coreutils' env sets them and execs
SIGNALS_AT_DEFAULT = ["env", "--default-signal=INT,TERM,HUP"]


def _slow_run(tmp_path: Path, ignore: signal.Signals | None = None) -> tuple[subprocess.Popen[str], Path]:
    """`layerbench run` in a process of its own (started with `ignore` ignored, as `nohup` does SIGHUP),
    once its first cell is saved and its second runs."""

    ignored = [] if ignore is None else [f"--ignore-signal={ignore.name[3:]}"]

    scenario = tmp_path / "slow.toml"
    scenario.write_text(SLOW)
    proc = subprocess.Popen(
        [
            *SIGNALS_AT_DEFAULT,
            *ignored,
            *LAYERBENCH,
            "run",
            str(scenario),
            "-d",
            "null",
            "--order",
            "planned",
            "--target-ci",
            "0",
            "--results-dir",
            str(tmp_path / "res"),
            "--work-root",
            str(tmp_path / "work"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for path in (tmp_path / "res").rglob("*.json"):
            try:
                if len(json.loads(path.read_text())["cells"]) == 1:
                    return proc, path
            except ValueError:  # claimed, not written yet
                pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the run did not get to its second cell: {proc.communicate()}")


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP (a closed terminal)"]
)
@pytest.mark.mounts
def test_an_interrupted_run_exits_130_and_keeps_its_finished_cells(tmp_path: Path, sig: signal.Signals) -> None:
    proc, path = _slow_run(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "layerbench: interrupted; finished cells are kept in the results file"
    doc = results.read(path)
    assert doc["status"] == "interrupted" and [c["status"] for c in doc["cells"]] == ["ok", "interrupted"]
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".layerbench-work-root"]


@pytest.mark.mounts
def test_a_run_started_with_nohup_goes_on_when_its_terminal_closes(tmp_path: Path) -> None:
    proc, path = _slow_run(tmp_path, ignore=signal.SIGHUP)
    proc.send_signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):  # an interrupted run ends in well under a second
        proc.wait(timeout=3)
    assert results.read(path)["status"] == "running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert results.read(path)["status"] == "interrupted"


@pytest.mark.mounts
def test_a_killed_run_is_listed_as_died_even_after_cleanup(tmp_path: Path) -> None:
    proc, path = _slow_run(tmp_path)
    code, out, _ = invoke("results", "--results-dir", str(tmp_path / "res"), "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "running"  # alive: the pid, boot and start time match
    proc.kill()
    proc.communicate(timeout=30)
    code, out, _ = invoke("results", "--results-dir", str(tmp_path / "res"), "--json")
    hint = f"died (run layerbench cleanup --work-root {tmp_path / 'work'})"  # the file records its work root
    assert code == 0 and json.loads(out)[0]["status"] == hint
    assert results.read(path)["work_root"] == str(tmp_path / "work")
    code, out, _ = invoke("cleanup", "--work-root", str(tmp_path / "work"))
    assert code == 0 and "removed" in out
    code, out, _ = invoke("results", "--results-dir", str(tmp_path / "res"))
    assert code == 0 and hint in out and str(path) in out


@pytest.mark.mounts
def test_repeat_writes_one_results_file_per_run_and_compare_takes_them_as_one_side(tiny: Path, tmp_path: Path) -> None:
    scenario = tiny
    common = ["--driver", "null", "--results-dir", str(tmp_path / "res"), "--work-root", str(tmp_path / "work")]
    code, _, err = invoke("run", str(scenario), *common, "--label", "aa", "--repeat", "3", "--target-ci", "0")
    assert code == 0, err
    paths = sorted((tmp_path / "res").rglob("*.json"))
    assert [p.name.split("_", 1)[1] for p in paths] == ["aa-r1.json", "aa-r2.json", "aa-r3.json"]
    assert "3 runs: " in err
    code, out, err = invoke("compare", str(paths[0]), str(paths[2]), "--old", str(paths[1]), "--fail-on", "worse")
    assert code in (0, 1), err  # null's microsecond timings may move; the test is that runs are counted
    assert "t-test of the 2+1 runs' medians" in out and "and 1 more run" in out
    code, _, err = invoke("run", str(scenario), *common, "--repeat", "2", "--dry-run")
    assert code == 2 and err == "layerbench: error: --repeat runs the suite again here; it does not take --dry-run\n"
