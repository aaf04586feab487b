"""Adaptive sampling (sample until the CI is inside the target) and each cell's time split."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench.analysis import results
from layerbench.analysis.stats import ci_half_width
from layerbench.cli import main
from layerbench.plugins import default_plugins
from layerbench.run import runner
from layerbench.run.sampling import PHASES, Sampling, headline_widths, stop_reason, time_split_lines
from layerbench.scenario import load_scenario

TINY = """
name = "tiny"
description = "A start and a copy-up on a small image."
[image]
layers = 2
files = 10
bytes = 40000
[[image.file]]
path = "t.bin"
size = 8192
[repeat]
samples = 3
warmup = 0
{extra}
[[step]]
op = "start"
measure = "startup_ns"
[[step]]
op = "append"
path = "t.bin"
measure = "copy_up_ns"
[[step]]
op = "usage"
"""


def adaptive(**kw: float | None) -> Sampling:
    args = {
        "samples": 10,
        "warmup": 0,
        "min_time_s": 0.0,
        "cold": False,
        "target_ci": 0.05,
        "min_samples": 5,
        "max_samples": 20,
        "budget_s": 0.0,
        **kw,
    }
    return Sampling(**args)  # type: ignore[arg-type]


def test_ci_half_width_is_the_bootstrap_interval_over_the_median() -> None:
    assert ci_half_width([100, 100, 100, 100, 100]) == 0.0
    assert ci_half_width([100]) == float("inf")  # one sample says nothing about its spread
    assert ci_half_width([0, 0, 0]) == 0.0 and ci_half_width([0, 0, 0, 5]) == float("inf")
    assert 0.3 < ci_half_width([50, 100, 150, 60, 140, 90, 110]) < 0.6


def test_a_quiet_cell_stops_on_the_target_at_its_minimum() -> None:
    quiet = {"startup_ns": [1000, 1010, 990, 1005, 995]}
    assert stop_reason(adaptive(), 4, 1.0, 1.0, {"startup_ns": quiet["startup_ns"][:4]}) is None
    assert stop_reason(adaptive(), 5, 1.0, 1.0, quiet) == "target"


def test_a_noisy_cell_goes_on_until_max_samples_or_its_budget() -> None:
    noisy = {"startup_ns": [100, 900, 300, 2000, 50, 700, 1500]}
    assert stop_reason(adaptive(), 7, 1.0, 1.0, noisy) is None
    assert stop_reason(adaptive(max_samples=7), 7, 1.0, 1.0, noisy) == "max_samples"
    assert stop_reason(adaptive(budget_s=5), 7, 1.0, 4.9, noisy) is None
    assert stop_reason(adaptive(budget_s=5), 7, 1.0, 5.0, noisy) == "budget"


def test_only_timing_metrics_are_headlines() -> None:
    recorded = {"startup_ns": [1000] * 5, "disk_bytes": [10, 9000, 3, 70000, 1], "image_disk_bytes": [4096]}
    assert list(headline_widths(recorded)) == ["startup_ns"]
    assert stop_reason(adaptive(), 5, 1.0, 1.0, recorded) == "target"


def test_the_minimum_is_never_above_the_scenarios_own_count_and_min_time_still_holds() -> None:
    assert adaptive(samples=2).bounds() == (2, 20)
    assert adaptive(samples=10, max_samples=None).bounds() == (5, 10)  # by default a cell only ends early
    assert adaptive(samples=10, max_samples=3).bounds() == (5, 5)
    quiet = {"x_ns": [1000, 1000]}
    assert stop_reason(adaptive(samples=2), 2, 0.1, 0.1, quiet) == "target"
    assert stop_reason(adaptive(samples=2, min_time_s=1.0), 2, 0.1, 0.1, quiet) is None


def test_a_pinned_cell_takes_exactly_its_samples() -> None:
    pinned = adaptive(target_ci=0.0, samples=3)
    quiet = {"x_ns": [1000] * 2}
    assert stop_reason(pinned, 2, 1.0, 1.0, quiet) is None
    assert stop_reason(pinned, 3, 1.0, 1.0, {"x_ns": [1, 5000, 90]}) == "pinned"
    assert stop_reason(adaptive(target_ci=0.0, samples=3, min_time_s=2.0), 3, 1.0, 1.0, quiet) is None


def test_samples_and_adaptive_false_pin_the_cell(tmp_path: Path) -> None:
    free = tmp_path / "free.toml"
    free.write_text(TINY.format(extra=""))
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(TINY.format(extra="adaptive = false"))
    null = default_plugins().driver("null")
    cell = runner.Cell(load_scenario(free), null, {}, "dir")
    assert runner._sampling_for(runner.RunConfig(), cell).adaptive
    assert not runner._sampling_for(runner.RunConfig(samples=4), cell).adaptive
    assert not runner._sampling_for(runner.RunConfig(target_ci=0), cell).adaptive
    assert not runner._sampling_for(runner.RunConfig(), runner.Cell(load_scenario(fixed), null, {}, "dir")).adaptive


@pytest.mark.mounts
def test_a_real_cell_records_why_it_stopped_and_where_its_time_went(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY.format(extra=""))
    cell = runner.Cell(load_scenario(scenario), default_plugins().driver("null"), {}, "dir")
    sampling = adaptive(samples=3, min_samples=2, max_samples=4)
    out = runner.run_cell(cell, tmp_path / "cell", sampling)
    assert out["status"] == "ok", out["error"]
    assert out["stop_reason"] in ("target", "max_samples") and 2 <= out["samples"] <= 4
    if out["stop_reason"] == "target":
        assert all(w <= 0.05 for w in out["ci_half_width"].values())
    else:
        assert out["samples"] == 4
    assert len(out["metrics"]["startup_ns"]["samples"]) == out["samples"]
    split = out["time_split_s"]
    assert set(split) == set(PHASES) and all(v >= 0 for v in split.values())
    assert sum(split.values()) == pytest.approx(out["duration_s"], abs=0.01)
    raw_ns = sum(sum(out["metrics"][m]["samples"]) for m in ("startup_ns", "copy_up_ns"))
    assert split["timed"] >= round(raw_ns / 1e9, 3) - 0.001  # what was recorded, before the overhead came off


@pytest.mark.mounts
def test_run_prints_the_split_and_pins_with_samples(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY.format(extra=""))
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
            "--samples",
            "2",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert "time: 1 cells took" in r.stderr and "stopped on: 1 pinned" in r.stderr and "slowest 1 cells:" in r.stderr
    (path,) = (tmp_path / "res").rglob("*.json")
    doc = results.read(path)  # validated against results.schema.json
    (c,) = doc["cells"]
    assert c["samples"] == 2 and c["stop_reason"] == "pinned" and "ci_half_width" not in c
    assert doc["settings"]["target_ci"] == 0.05 and time_split_lines(doc)[0].startswith("time: 1 cells")
