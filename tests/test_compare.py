"""compare: golden output on committed runs, and a live run with a deliberately slowed driver."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from layerbench import hookimpl
from layerbench.analysis import results
from layerbench.analysis.compare import (
    benjamini_hochberg,
    compare,
    compare_runs,
    format_changes,
    format_text,
    significant,
)
from layerbench.analysis.results_model import CellResult
from layerbench.cli import main
from layerbench.drivers.null import NullDriver
from layerbench.errors import UserError
from layerbench.plugins import DriverRegistry, load_plugins
from layerbench.run.runner import RunConfig, run

from .checks import golden

DATA = Path(__file__).parent / "data"


class SlowPlugin:
    """Registers `slow`: the null driver whose mount sleeps `delay_s` first."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.__name__ = f"slow-plugin-{delay_s}"

    @hookimpl
    def layerbench_register_drivers(self, registry: DriverRegistry) -> None:
        delay = self.delay_s

        class SlowNullDriver(NullDriver):
            name = "slow"

            def mount(self, container_id: str) -> Path:
                if delay:  # sleep(0) would still yield the CPU, and a busy machine might not give it back soon
                    time.sleep(delay)
                return super().mount(container_id)

        registry.add(SlowNullDriver)


SCENARIO = """
name = "slowcheck"
description = "Start a container, write to an image file, take the disk usage."
[image]
layers = 2
files = 10
bytes = 50000
[[image.file]]
path = "t.bin"
size = 4096
[repeat]
samples = 7
warmup = 1
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


def slow_run(tmp: Path, delay_s: float, label: str) -> dict[str, Any]:
    """A small scenario on null and on `slow`, 7 samples each."""
    scenario = tmp / "slowcheck.toml"
    scenario.write_text(SCENARIO)
    config = RunConfig(
        scenarios=(str(scenario),),
        drivers=("null", "slow"),
        results_dir=tmp / "res",
        label=label,
        work_root=tmp / "work",
    )
    doc, _ = run(config, plugins=load_plugins(extra=(SlowPlugin(delay_s),)))
    return doc


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_a_run_against_itself_has_no_change() -> None:
    code, out, err = invoke("compare", str(DATA / "copy-up.json"), str(DATA / "copy-up.json"), "--fail-on", "worse")
    assert code == 0, err
    assert out.splitlines()[-1].startswith("no change: 16 unchanged (of 16 metrics;")
    golden("compare-self.txt", out)


def test_committed_slowed_run_flags_the_slow_driver_and_fails_the_gate() -> None:
    # Made by slow_run(tmp, 0.0, "before") and slow_run(tmp, 0.002, "after"). The sleep in mount also
    # leaves the slow driver's next write colder (copy_up_ns p=0.026), but among 12 comparisons that
    # does not survive the Benjamini-Hochberg correction (0.16); startup (p=0.00058, BH 0.0029) does.
    code, out, _ = invoke(
        "compare", str(DATA / "slow-before.json"), str(DATA / "slow-after.json"), "--fail-on", "worse"
    )
    assert code == 1
    flagged = [line.split() for line in out.splitlines() if line.startswith("+")]
    assert [(f[8], f[9], f[11]) for f in flagged] == [("slow", "dir", "startup_ns")]
    assert "the whole machine moved" not in out  # null did not move: only one driver did
    golden("compare-slow.txt", out)


@pytest.mark.mounts
def test_a_live_slowed_driver_is_flagged_and_nothing_else(tmp_path: Path) -> None:
    # The threshold is wide (x4) so that run-to-run noise in the null driver's microsecond
    # timings cannot pass for a change; a 2 ms sleep in mount is a x100 and more.
    before = slow_run(tmp_path, 0.0, "before")
    after = slow_run(tmp_path, 0.002, "after")
    changes, notes = compare(before, after, threshold=3.0)
    assert notes == []
    flagged = {(c.driver, c.metric, c.verdict) for c in changes if c.verdict != "unchanged"}
    assert flagged == {("slow", "startup_ns", "worse")}
    per_cell = {(c.driver, c.metric) for c in changes}
    assert {d for d, _ in per_cell} == {"null", "slow"} and len(changes) == len(per_cell) >= 6
    self_changes, _ = compare(after, after)
    assert {c.verdict for c in self_changes} == {"unchanged"}
    # and the other way round it is better
    back, _ = compare(after, before, threshold=3.0)
    assert {(c.driver, c.metric) for c in back if c.verdict == "better"} == {("slow", "startup_ns")}


def test_a_changed_scenario_is_left_out_and_named_the_others_compared(tmp_path: Path) -> None:
    doc = json.loads((DATA / "copy-up.json").read_text())
    doc["scenarios"]["copy-up"]["sha256"] = "0" * 64
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(doc))
    code, _, err = invoke("compare", str(DATA / "copy-up.json"), str(changed))
    assert code == 2  # nothing else to compare
    assert err == (
        "layerbench: error: nothing to compare: no cell and metric of the old run pairs with one of the new run "
        "(changed scenarios left out: copy-up)\n"
    )
    old = results.read(REFERENCE / "20261203T061119Z_after.json")
    new = json.loads(json.dumps(old))
    new["scenarios"]["unpack"]["sha256"] = "f" * 64
    comp = compare_runs(old, new)
    assert comp.changed_scenarios == ["unpack"]
    assert {c.scenario for c in comp.changes} == set(old["scenarios"]) - {"unpack"}
    assert comp.notes[0].startswith("scenarios changed between the runs") and "unpack (sha256 " in comp.notes[0]


def test_unpairable_runs_and_bad_files_are_one_line(tmp_path: Path) -> None:
    code, _, err = invoke("compare", str(DATA / "copy-up.json"), str(DATA / "startup.json"))
    assert code == 2 and err.startswith("layerbench: error: nothing to compare") and err.count("\n") == 1
    code, _, err = invoke("compare", str(DATA / "copy-up.json"), str(tmp_path / "missing.json"))
    assert code == 2 and "not a readable results file" in err and "Traceback" not in err


def test_significance_uses_mann_whitney_with_five_samples_else_ci_overlap() -> None:
    assert significant([10, 11, 12, 10, 11], [20, 21, 22, 20, 21]) == (True, "mann-whitney p=0.011")
    assert significant([10, 11, 12, 10, 11], [10, 12, 11, 10, 11])[0] is False
    assert significant([10, 11, 12], [20, 21, 22]) == (True, "ci apart")
    assert significant([10, 11, 30], [12, 20, 21]) == (False, "ci overlap")


def test_a_significant_change_within_the_threshold_is_unchanged() -> None:
    old = results.new_document("a", {"name": "m"}, {"version": "0"})
    old["scenarios"] = {"s": {"sha256": "1" * 64, "params": {}}}
    old["cells"] = [
        {
            "scenario": "s",
            "driver": "d",
            "params": {},
            "status": "ok",
            "metrics": {
                "x_ns": {"unit": "ns", "samples": [100, 101, 102, 100, 101]},
                "n_count": {"unit": "count", "samples": [1, 1, 1, 1, 1]},
            },
        }
    ]
    new = json.loads(json.dumps(old))
    new["cells"][0]["metrics"]["x_ns"]["samples"] = [105, 106, 107, 105, 106]
    new["cells"][0]["metrics"]["n_count"]["samples"] = [3, 3, 3, 3, 3]
    changes, _ = compare(old, new, threshold=0.10)
    assert {c.metric: c.verdict for c in changes} == {"x_ns": "unchanged", "n_count": "changed"}
    # beyond a 1% threshold and significant within the runs' samples, but one run a side: inside the
    # between-run noise floor, unless an A/A pair of this machine says the timing does not wander that far
    assert {c.metric: c.verdict for c in compare(old, new, threshold=0.01)[0]}["x_ns"] == "noise"
    assert {c.metric: c.verdict for c in compare(old, new, 0.01, noise=[(old, old)])[0]}["x_ns"] == "worse"
    text = format_changes(changes, [], 0.10)
    assert text.splitlines()[-1].startswith("changed: 1 changed, 1 unchanged (of 2 metrics;")
    with pytest.raises(UserError, match="must be 0 or more"):
        compare(old, new, threshold=-1)


REFERENCE = Path(__file__).parent.parent / "results" / "reference"


def shifted(doc: dict[str, Any], factor: float, kernel: str, only: tuple[str, str] | None = None) -> dict[str, Any]:
    """`doc` as if measured on a machine `factor` times slower (or one driver's metric `only`), another kernel."""
    out = json.loads(json.dumps(doc))
    out["machine"]["kernel"] = kernel
    for cell in out["cells"]:
        for metric, data in cell["metrics"].items():
            if metric.endswith("_ns") and (only is None or (cell["driver"], metric) == only):
                data["samples"] = [v * factor for v in data["samples"]]
    return out


def test_a_whole_machine_shift_is_named_and_not_a_regression() -> None:
    old = results.read(REFERENCE / "20261130T074758Z_default.json")
    new = shifted(old, 1.3, "6.18.99-other")
    comp = compare_runs(old, new)
    assert comp.machine_moved and comp.overall == pytest.approx(1.3)
    assert set(comp.shifts) == {"overlay2", "btrfs", "vfs"}
    assert all(s == pytest.approx(1.3) for s in comp.shifts.values())
    assert not [c for c in comp.changes if c.verdict == "worse"]
    assert comp.differences == ["kernel: 6.18.44-fc-v857 -> 6.18.99-other"]
    text = format_text(comp)
    assert "warning: the runs differ in kernel: 6.18.44-fc-v857 -> 6.18.99-other" in text
    assert "the whole machine moved" in text and "btrfs ×1.30" in text
    # a real regression on top of the machine's shift still shows: overlay2's copy-up 4x slower (beyond
    # the default noise floor of one run a side)
    worse = shifted(new, 4.0, "6.18.99-other", only=("overlay2", "copy_up_ns"))
    flagged = {(c.driver, c.metric) for c in compare_runs(old, worse).changes if c.verdict == "worse"}
    assert flagged == {("overlay2", "copy_up_ns")}


def test_compare_of_two_reference_runs_in_markdown_and_json(tmp_path: Path) -> None:
    old, new = REFERENCE / "20261130T074758Z_default.json", REFERENCE / "20261130T075321Z_quick.json"
    code, md, _ = invoke("compare", str(old), str(new), "--format", "md")
    assert code == 0 and md.startswith("## layerbench compare") and "| settings | order=random | quick=True" in md
    code, text, _ = invoke("compare", str(old), str(new), "--format", "json")
    doc = json.loads(text)
    assert doc["machine_moved"] is False and set(doc["shifts"]) == {"overlay2", "btrfs", "vfs"}
    assert doc["differences"] == ["settings: order=random -> quick=True, order=random"]
    assert {c["backing"] for c in doc["changes"]} == {"ext4", "btrfs"}


def test_benjamini_hochberg_matches_the_textbook() -> None:
    # p-values and their BH adjustment, computed by hand: p(k) * m / k, made monotone from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.2])


AFTER, AFTER_OFF = REFERENCE / "20261203T061119Z_after.json", REFERENCE / "20261203T061729Z_after-off.json"


def slowed(doc: dict[str, Any], driver: str, factor: float) -> dict[str, Any]:
    """A copy of `doc` in which `driver` took `factor` times as long in every timing sample."""
    out = json.loads(json.dumps(doc))
    for cell in out["cells"]:
        for metric, data in cell["metrics"].items():
            if cell["driver"] == driver and metric.endswith("_ns"):
                data["samples"] = [v * factor for v in data["samples"]]
    return out


def test_an_aa_pair_is_no_change_and_passes_the_gate() -> None:
    # Two default runs of the same code back to back (2026-12-03): within-run tests alone called 18
    # metrics worse and 23 better (p down to 1.6e-10); between runs, those are noise.
    code, out, _ = invoke("compare", str(AFTER), str(AFTER_OFF), "--fail-on", "worse")
    assert code == 0
    assert out.splitlines()[-1].startswith("no change: 41 noise, 580 unchanged (of 621 metrics;")
    assert "noise: 41 timings moved significantly within each run's samples" in out
    assert not [line for line in out.splitlines() if line.startswith(("+", "-", "?"))]  # noise only with --all
    _, everything, _ = invoke("compare", str(AFTER), str(AFTER_OFF), "--all")
    assert sum(line.startswith("?") for line in everything.splitlines()) == 41


@pytest.mark.parametrize("driver", ["overlay2", "btrfs", "vfs"])
def test_one_driver_slowed_1_3x_is_caught_on_every_timing(driver: str) -> None:
    old = results.read(AFTER)
    comp = compare_runs(old, slowed(old, driver, 1.3))
    assert set(comp.driver_moved) == {driver} and comp.driver_moved[driver] == pytest.approx(1.3)
    timings = [c for c in comp.changes if c.driver == driver and c.metric.endswith("_ns")]
    assert len(timings) >= 79 and {c.verdict for c in timings} == {"worse"}
    assert not [c for c in comp.changes if c.verdict != "unchanged" and c not in timings]
    # on top of the A/A pair's own noise the slowed driver still fails the gate, nothing else does
    on_noise = compare_runs(old, slowed(results.read(AFTER_OFF), driver, 1.3))
    worse = [c for c in on_noise.changes if c.verdict == "worse"]
    assert worse and {c.driver for c in worse} == {driver}


def test_several_runs_a_side_are_tested_on_their_medians() -> None:
    a, b = results.read(AFTER), results.read(AFTER_OFF)
    same = compare_runs([a, b], [b, a])
    assert same.runs == (2, 2) and {c.verdict for c in same.changes} == {"unchanged"}
    assert "t-test of 2+2 run medians" in same.changes[0].test
    # one metric of one cell 1.3x slower in every new run, the runs otherwise A/A: the runs' spread of that
    # metric (metadata-storm's chown on vfs: 0.3% between the pair) is small next to 1.3x, so it stands out
    # on run medians alone, though within the noise floor of one run a side
    cell = next(c for c in a["cells"] if (c["scenario"], c["driver"]) == ("metadata-storm", "vfs"))

    def one_slower(doc: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(doc))
        for c in out["cells"]:
            if CellResult.from_dict(c).key == CellResult.from_dict(cell).key:
                c["metrics"]["chown_all_ns"]["samples"] = [v * 1.3 for v in c["metrics"]["chown_all_ns"]["samples"]]
        return out

    comp = compare_runs([a, b], [one_slower(b), one_slower(a)])
    flagged = [(c.scenario, c.driver, c.metric, c.verdict) for c in comp.changes if c.verdict != "unchanged"]
    assert flagged == [("metadata-storm", "vfs", "chown_all_ns", "worse")]
    single = {(c.scenario, c.driver, c.metric): c.verdict for c in compare_runs(a, one_slower(b)).changes}
    assert single[("metadata-storm", "vfs", "chown_all_ns")] != "worse"  # one run a side cannot tell
    assert comp.changes[0].floor == 1.0  # no floor: the runs' own spread is the noise


def test_noise_pairs_set_each_timings_floor() -> None:
    a, b = results.read(AFTER), results.read(AFTER_OFF)
    from layerbench.analysis.compare import noise_floors

    floors = noise_floors([(a, b)])
    assert floors[("copy-up", "btrfs", "startup_ns")] == pytest.approx(2.007, abs=0.001)
    code, out, _ = invoke(
        "compare", str(AFTER), str(AFTER_OFF), "--noise", str(AFTER), str(AFTER_OFF), "--fail-on", "worse"
    )
    assert code == 0 and "noise floor (learned from A/A pairs)" in out


def test_markdown_rows_keep_their_columns() -> None:
    code, md, _ = invoke("compare", str(AFTER), "--format", "md", "--all", str(AFTER))
    rows = [line for line in md.splitlines() if line.startswith("| ") and "startup_ns" in line]
    header = next(line for line in md.splitlines() if line.startswith("| ratio"))
    assert code == 0 and rows
    assert {row.count(" | ") for row in rows} == {header.count(" | ")}
    assert "\\|" not in md
