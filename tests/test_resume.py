from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench import hookimpl
from layerbench.analysis import results
from layerbench.cli import main
from layerbench.drivers import NullDriver
from layerbench.errors import UserError
from layerbench.plugins import load_plugins
from layerbench.run.runner import RunConfig, run

#: conftest's `starts` fixture: writes a scenario of container counts and samples
Starts = Callable[[list[int], int], Path]


class Flaky(NullDriver):
    name = "flaky"
    interrupt_at = 2  # containers in a sample that trigger Ctrl-C; 0: never

    def create_container(self, container_id: str, image: str) -> None:
        if Flaky.interrupt_at and container_id.endswith(f"c{Flaky.interrupt_at - 1}"):
            raise KeyboardInterrupt


class FlakyPlugin:
    __name__ = "flaky-plugin"

    @hookimpl
    def layerbench_register_drivers(self, registry):
        registry.add(Flaky)


@pytest.mark.mounts
def test_resume_finishes_an_interrupted_run_without_redoing_cells(starts: Starts, tmp_path: Path) -> None:
    scenario = starts([1, 2], 2)
    plugins = load_plugins(extra=(FlakyPlugin(),))
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("flaky",),
        order="planned",
        results_dir=tmp_path / "res",
        work_root=tmp_path / "work",
    )
    with pytest.raises(KeyboardInterrupt):
        run(config, plugins=plugins)
    (path,) = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)
    assert doc["status"] == "interrupted"
    assert [(c["params"]["n"], c["status"]) for c in doc["cells"]] == [(1, "ok"), (2, "interrupted")]
    first = doc["cells"][0]

    Flaky.interrupt_at = 0
    try:
        done, again = run(
            RunConfig(resume=path, results_dir=tmp_path / "res", work_root=tmp_path / "work"), plugins=plugins
        )
    finally:
        Flaky.interrupt_at = 2
    assert again == path and done["status"] == "finished"
    assert [(c["params"]["n"], c["status"]) for c in done["cells"]] == [(1, "ok"), (2, "ok")]
    assert done["cells"][0] == first  # kept, not run again


@pytest.mark.mounts
def test_resume_refuses_a_changed_scenario(starts: Starts, tmp_path: Path) -> None:
    scenario = starts([1, 2], 2)
    config = RunConfig(
        scenarios=(str(scenario),), drivers=("null",), results_dir=tmp_path / "res", work_root=tmp_path / "work"
    )
    _, path = run(config)
    scenario.write_text(scenario.read_text() + "\n# edited\n")
    with pytest.raises(UserError, match="scenario 'starts' changed since the run started"):
        run(RunConfig(resume=path, results_dir=tmp_path / "res", work_root=tmp_path / "work"))


def _finished_run(scenario: Path, tmp_path: Path) -> Path:
    _, path = run(
        RunConfig(
            scenarios=(str(scenario),),
            drivers=("null",),
            results_dir=tmp_path / "res",
            work_root=tmp_path / "work",
            seed=3,
        )
    )
    return path


@pytest.mark.mounts
def test_resuming_a_finished_run_says_so_and_changes_nothing(starts: Starts, tmp_path: Path) -> None:
    path = _finished_run(starts([1, 2], 2), tmp_path)
    before = path.read_bytes()
    r = CliRunner().invoke(main, ["run", "--resume", str(path), "--work-root", str(tmp_path / "work")])
    assert r.exit_code == 0, r.stderr
    assert f"{path}: the run finished at {results.read(path)['finished_utc']}; nothing to do" in r.stderr
    assert path.read_bytes() == before and list((tmp_path / "res").rglob("*.json")) == [path]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "btrfs"], "--resume: the run was made with drivers null; drop -d or start a new run"),
        (
            ["--seed", "4", "-p", "n=1"],
            ("--resume: the run was made with parameters none and seed 3; drop -p and --seed or start a new run"),
        ),
        (["--label", "other"], "--resume: the run was made with label run; drop --label or start a new run"),
        (
            ["copy-up"],
            "--resume: the run was made with scenarios starts; drop the scenario arguments or start a new run",
        ),
    ],
)
@pytest.mark.mounts
def test_resume_refuses_other_settings_naming_the_stored_ones(
    starts: Starts, tmp_path: Path, args: list[str], message: str
) -> None:
    path = _finished_run(starts([1, 2], 2), tmp_path)
    before = path.read_bytes()
    r = CliRunner().invoke(main, ["run", "--resume", str(path), *args])
    assert r.exit_code == 2 and r.stderr == f"layerbench: error: {message}\n"
    assert path.read_bytes() == before


@pytest.mark.mounts
def test_resume_accepts_the_settings_the_run_had(starts: Starts, tmp_path: Path) -> None:
    path = _finished_run(starts([1, 2], 2), tmp_path)
    r = CliRunner().invoke(
        main, ["run", "--resume", str(path), "-d", "null", "--seed", "3", "--work-root", str(tmp_path / "work")]
    )
    assert r.exit_code == 0 and "nothing to do" in r.stderr


@pytest.mark.mounts
def test_resume_refuses_a_run_that_is_still_going(starts: Starts, tmp_path: Path) -> None:
    path = _finished_run(starts([1, 2], 2), tmp_path)
    doc = results.read(path)
    doc["status"], doc["run"] = "running", results.run_record()  # this very process: alive
    results.save(doc, path)
    with pytest.raises(UserError, match=rf"^--resume {path}: the run is still going \(pid {os.getpid()}\)"):
        run(RunConfig(resume=path, work_root=tmp_path / "work"))


class Failing(NullDriver):
    name = "failing"
    broken = True  # a sample of two containers fails while set

    def create_container(self, container_id: str, image: str) -> None:
        if Failing.broken and container_id.endswith("c1"):
            raise RuntimeError("the second container cannot be made")


class FailingPlugin:
    __name__ = "failing-plugin"

    @hookimpl
    def layerbench_register_drivers(self, registry):
        registry.add(Failing)


@pytest.mark.mounts
def test_retry_failed_runs_the_failed_cells_of_a_finished_run_again(starts: Starts, tmp_path: Path) -> None:
    scenario = starts([1, 2], 2)
    plugins = load_plugins(extra=(FailingPlugin(),))
    config = RunConfig(
        scenarios=(str(scenario),), drivers=("failing",), results_dir=tmp_path / "res", work_root=tmp_path / "work"
    )
    doc, path = run(config, plugins=plugins)
    assert doc["status"] == "finished"
    by_n = {c["params"]["n"]: c for c in doc["cells"]}
    assert by_n[1]["status"] == "ok" and by_n[2]["status"] == "error"
    assert "the second container cannot be made" in by_n[2]["error"]

    lines: list[str] = []
    again = RunConfig(resume=path, results_dir=tmp_path / "res", work_root=tmp_path / "work")
    same, _ = run(again, plugins=plugins, progress=lines.append)  # without --retry-failed: nothing to do
    assert same["cells"] == doc["cells"]
    assert any(line.endswith("nothing to do (--retry-failed runs its 1 failed cells again)") for line in lines)

    Failing.broken = False
    try:
        lines.clear()
        retried, same_path = run(dataclasses.replace(again, retry_failed=True), plugins=plugins, progress=lines.append)
    finally:
        Failing.broken = True
    assert same_path == path and retried["status"] == "finished"
    assert any("1 cells done, 1 to go" in line for line in lines), lines
    assert retried["cells"][0] == by_n[1]  # the cell that was fine is kept as it was
    assert [(c["params"]["n"], c["status"]) for c in retried["cells"]] == [(1, "ok"), (2, "ok")]
    assert results.read(path)["cells"] == retried["cells"]


def test_retry_failed_without_resume_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["run", "-d", "null", "--retry-failed", "--results-dir", str(tmp_path)])
    assert (r.exit_code, r.stderr) == (
        2,
        "layerbench: error: --retry-failed runs a run's failed cells again: pass --resume FILE too\n",
    )
