"""compare: golden output on committed runs, and a live run with a deliberately slowed driver."""

from __future__ import annotations

import json
import os
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
from layerbench.cli import main
from layerbench.drivers.null import NullDriver
from layerbench.errors import UserError
from layerbench.plugins import DriverRegistry, load_plugins
from layerbench.run.runner import RunConfig, run

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
UPDATE = os.environ.get("LAYERBENCH_UPDATE_GOLDEN") == "1"  # regenerate the golden files


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


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


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


def test_a_changed_scenario_is_refused_in_one_line(tmp_path: Path) -> None:
    doc = json.loads((DATA / "copy-up.json").read_text())
    doc["scenarios"]["copy-up"]["sha256"] = "0" * 64
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(doc))
    code, _, err = invoke("compare", str(DATA / "copy-up.json"), str(changed))
    assert code == 2
    assert err == (
        "layerbench: error: scenario 'copy-up' changed between the runs (sha256 3187f758b432 -> "
        "000000000000); its results measure different things and are not compared\n"
    )


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
    assert {c.metric: c.verdict for c in compare(old, new, threshold=0.01)[0]}["x_ns"] == "worse"
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
    # a real regression on top of the machine's shift still shows: overlay2's copy-up 3x slower
    worse = shifted(new, 3.0, "6.18.99-other", only=("overlay2", "copy_up_ns"))
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
