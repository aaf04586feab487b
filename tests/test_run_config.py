"""RunConfig is the one source of a run's settings: each field is one option of `layerbench run`,
saved into the results file and resumed from it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from layerbench.cli.run import run_cmd
from layerbench.errors import UserError
from layerbench.run.config import RunConfig

FIELDS = dataclasses.fields(RunConfig)


def test_every_setting_is_one_option_of_run_under_its_own_name() -> None:
    params = {p.name: p for p in run_cmd.params}
    for f in FIELDS:
        flag = f.metadata["flag"]
        assert flag is not None, f"{f.name}: a setting of `layerbench run` without an option"
        assert f.name in params, f"{f.name}: not an option of `layerbench run`"
        if flag.decls:
            assert params[f.name].opts[0] == flag.decls[0].split("/")[0]


def test_docs_results_lists_every_saved_setting() -> None:
    """docs/results.md names each key of a results file's `settings` (a setting is declared once, in RunConfig;
    its docs line is the one other place)."""
    docs = (Path(__file__).parent.parent / "docs" / "results.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| `settings` |"))
    listed = set(re.findall(r"`(\w+)`", row.split(":", 1)[1].split(";", 1)[0]))
    saved = RunConfig().settings(["a.toml"], ["vfs"])
    assert listed == set(saved), f"docs/results.md lacks {set(saved) - listed}, has no such {listed - set(saved)}"


def test_a_config_saved_and_resumed_is_the_same_config(tmp_path: Path) -> None:
    given = RunConfig(
        scenarios=("a.toml",),
        drivers=("vfs",),
        overrides={"n": [1, 2]},
        backings=("ext4", "xfs"),
        samples=3,
        warmup=1,
        min_time_s=0.5,
        target_ci=0.1,
        min_samples=4,
        max_samples=9,
        cell_budget_s=2.0,
        templates=True,
        overlap_teardown=True,
        quick=True,
        cold=True,
        order="planned",
        seed=7,
        label="mine",
        cell_timeout_s=60.0,
        max_image_bytes=1 << 30,
        loop_io="buffered",
        spread=True,
    )
    settings = given.settings(["/abs/a.toml"], ["vfs"])
    here = RunConfig(results_dir=tmp_path / "res", work_root=tmp_path / "work", resume=tmp_path / "x.json")
    back = here.resumed(settings, "mine", tmp_path / "x.json")
    want = dataclasses.replace(
        given, scenarios=("/abs/a.toml",), results_dir=here.results_dir, work_root=here.work_root
    )
    assert back == want


def test_a_file_from_before_a_setting_resumes_with_what_it_meant(tmp_path: Path) -> None:
    old = {k: v for k, v in RunConfig().settings([], []).items() if k not in ("target_ci", "loop_io", "templates")}
    back = RunConfig(target_ci=0.3, loop_io="buffered").resumed(old, "run", tmp_path / "x.json")
    assert (back.target_ci, back.loop_io, back.templates) == (0.0, "direct", False)  # pinned, direct, built


def test_a_file_without_the_settings_a_resume_needs_is_one_line(tmp_path: Path) -> None:
    settings = RunConfig().settings([], [])
    del settings["seed"], settings["cold"]
    with pytest.raises(UserError, match=r"x\.json: has no run settings to resume from \(no cold, seed\)$"):
        RunConfig().resumed(settings, "run", tmp_path / "x.json")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"label": "a/b"}, r"^--label 'a/b': use letters"),
        ({"overrides": ("n=",)}, r"^--param 'n=': expected name=value"),
        ({"max_image_bytes": "10X"}, r"^--max-image-bytes '10X': expected a size"),
    ],
)
def test_bad_option_values_are_one_line(options: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        RunConfig.from_options(options)
