from __future__ import annotations

from pathlib import Path

import pytest

from layerbench.drivers import NullDriver
from layerbench.harness import hookimpl, results
from layerbench.harness.errors import UserError
from layerbench.harness.plugins import load_plugins
from layerbench.harness.runner import RunConfig, run

SCENARIO = """
name = "two"
description = "Two cells."
[params]
n = [1, 2]
[image]
layers = 1
files = 3
bytes = 100
[repeat]
samples = 2
[[step]]
op = "start"
count = "${n}"
"""


class Flaky(NullDriver):
    name = "flaky"
    interrupt_at = 2  # containers in a sample that trigger Ctrl-C; 0: never

    def create_container(self, container_id: str, image: str) -> None:
        if Flaky.interrupt_at and container_id.endswith(f"c{Flaky.interrupt_at - 1}"):
            raise KeyboardInterrupt


class FlakyPlugin:
    __name__ = "flaky-plugin"

    @hookimpl
    def layerbench_register_drivers(self, registry):  # type: ignore[no-untyped-def]
        registry.add(Flaky)


def test_resume_finishes_an_interrupted_run_without_redoing_cells(tmp_path: Path) -> None:
    scenario = tmp_path / "two.toml"
    scenario.write_text(SCENARIO)
    plugins = load_plugins(extra=(FlakyPlugin(),))
    config = RunConfig(scenarios=(str(scenario),), drivers=("flaky",), order="planned",
                       results_dir=tmp_path / "res", work_root=tmp_path / "work")
    with pytest.raises(KeyboardInterrupt):
        run(config, plugins=plugins)
    (path,) = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)
    assert doc["status"] == "interrupted"
    assert [(c["params"]["n"], c["status"]) for c in doc["cells"]] == [(1, "ok"), (2, "interrupted")]
    first = doc["cells"][0]

    Flaky.interrupt_at = 0
    try:
        done, again = run(RunConfig(resume=path, results_dir=tmp_path / "res", work_root=tmp_path / "work"),
                          plugins=plugins)
    finally:
        Flaky.interrupt_at = 2
    assert again == path and done["status"] == "finished"
    assert [(c["params"]["n"], c["status"]) for c in done["cells"]] == [(1, "ok"), (2, "ok")]
    assert done["cells"][0] == first  # kept, not run again


def test_resume_refuses_a_changed_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "two.toml"
    scenario.write_text(SCENARIO)
    config = RunConfig(scenarios=(str(scenario),), drivers=("null",), results_dir=tmp_path / "res",
                       work_root=tmp_path / "work")
    _, path = run(config)
    scenario.write_text(SCENARIO + "\n# edited\n")
    with pytest.raises(UserError, match="scenario 'two' changed since the run started"):
        run(RunConfig(resume=path, results_dir=tmp_path / "res", work_root=tmp_path / "work"))
