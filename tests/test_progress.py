"""The live run: ETA learned from finished cells, plain lines off a terminal, the runner's cell events."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner

from layerbench.cli import main
from layerbench.run.progress import CellEvent, LiveBar, PlainLines, RunClock, duration_text
from layerbench.run.runner import RunConfig, run


def _event(
    kind: Literal["planned", "started", "finished"], i: int, scenario: str, driver: str, duration_s: float | None = None
) -> CellEvent:
    return CellEvent(kind, i, 6, scenario, driver, {}, "ext4", duration_s, "ok" if kind == "finished" else None)


def _plan() -> RunClock:
    clock = RunClock(started=0.0)
    for i, (s, d) in enumerate([("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("a", "x"), ("c", "z")], 1):
        clock.update(_event("planned", i, s, d), now=0.0)
    return clock


def test_no_eta_before_a_cell_finished() -> None:
    clock = _plan()
    clock.update(_event("started", 1, "a", "x"), now=0.0)
    assert clock.eta_s(now=5.0) is None and clock.eta_text(now=5.0) == "ETA unknown"
    assert clock.elapsed_s(now=5.0) == 5.0


def test_eta_learns_per_scenario_and_driver_then_scenario_then_overall() -> None:
    clock = _plan()
    clock.update(_event("started", 1, "a", "x"), now=0.0)
    clock.update(_event("finished", 1, "a", "x", 10.0), now=10.0)
    clock.update(_event("started", 2, "a", "x"), now=10.0)
    clock.update(_event("finished", 2, "a", "x", 20.0), now=30.0)
    clock.update(_event("started", 3, "a", "y"), now=30.0)
    clock.update(_event("finished", 3, "a", "y", 2.0), now=32.0)
    assert clock.expected_s(("a", "x")) == 15.0  # its own cells' mean
    assert clock.expected_s(("a", "z")) == pytest.approx(32 / 3)  # its scenario's mean
    assert clock.expected_s(("c", "z")) == pytest.approx(32 / 3)  # every finished cell's mean
    # left: b/x (no b yet: overall 32/3), a/x (15), c/z (overall 32/3)
    assert clock.eta_s(now=32.0) == pytest.approx(15 + 2 * 32 / 3)
    clock.update(_event("started", 4, "b", "x"), now=32.0)  # the running cell counts what it has left
    assert clock.eta_s(now=36.0) == pytest.approx(15 + 2 * 32 / 3 - 4)
    assert clock.eta_s(now=1000.0) == pytest.approx(15 + 32 / 3)  # overdue: zero left, not negative


def test_a_finished_event_without_duration_takes_the_time_since_it_started() -> None:
    clock = _plan()
    clock.update(_event("started", 1, "a", "x"), now=3.0)
    clock.update(_event("finished", 1, "a", "x"), now=7.5)
    assert clock.finished == {1: 4.5} and clock.running is None


def test_duration_text() -> None:
    assert [duration_text(s) for s in (0.04, 4.25, 42, 185, 3725)] == [
        "0.0 s",
        "4.2 s",
        "42 s",
        "3 min 05 s",
        "1 h 02 min",
    ]


def test_plain_lines_name_the_cell_and_give_elapsed_and_eta() -> None:
    out = io.StringIO()
    clock = _plan()
    clock.started = time.monotonic()
    lines = PlainLines(out, clock)
    lines.event(CellEvent("started", 1, 6, "copy-up", "overlay2", {"file_size": 4096}, "ext4"))
    lines.event(CellEvent("finished", 1, 6, "copy-up", "overlay2", {"file_size": 4096}, "ext4", 2.0, "ok"))
    first, second = out.getvalue().splitlines()
    assert first == "[1/6] copy-up overlay2 on ext4 (file_size=4 KiB)"
    ended = r"\[1/6\] copy-up overlay2 on ext4 \(file_size=4 KiB\): ok in 2\.0 s; elapsed [0-9.]+ s, ETA 10 s"
    assert re.fullmatch(ended, second), second  # 5 more x 2 s


def test_live_bar_shows_cells_done_the_running_cell_elapsed_and_eta() -> None:
    from rich.console import Console

    out = io.StringIO()
    clock = _plan()
    clock.started = time.monotonic()
    bar = LiveBar(clock, Console(file=out, force_terminal=True, width=120))
    try:
        bar.event(CellEvent("started", 1, 6, "a", "x", {}, "ext4"))
        bar.event(CellEvent("finished", 1, 6, "a", "x", {}, "ext4", 2.0, "ok"))
        bar.event(CellEvent("started", 2, 6, "a", "x", {"file_size": 65536}, "ext4"))
        bar.event(CellEvent("finished", 2, 6, "a", "x", {"file_size": 65536}, "ext4", 4.0, "error"))
    finally:
        bar.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "2/6 elapsed" in screen and "ETA 12 s" in screen  # a/x took 2 s and 4 s: 4 cells left at 3 s
    assert "[2/6] a x on ext4 (file_size=64 KiB): error" in screen  # a failed cell stays on the screen


@pytest.mark.parametrize(
    ("overlap", "order"),
    [
        (True, ["started 1", "started 2", "finished 1", "finished 2"]),  # cell 1's teardown beside cell 2's set-up
        (False, ["started 1", "finished 1", "started 2", "finished 2"]),
    ],
)
@pytest.mark.mounts
def test_run_reports_each_cell_planned_started_finished(
    tiny: Path, tmp_path: Path, overlap: bool, order: list[str]
) -> None:
    scenario = tiny
    seen: list[CellEvent] = []
    lines: list[str] = []
    doc, _ = run(
        RunConfig(
            scenarios=(str(scenario),),
            drivers=("null",),
            results_dir=tmp_path / "res",
            work_root=tmp_path / "work",
            order="planned",
            target_ci=0.0,
            overlap_teardown=overlap,
        ),
        progress=lines.append,
        events=seen.append,
    )
    assert all(e.total == 2 for e in seen)
    assert [f"{e.kind} {e.index}" for e in seen] == ["planned 1", "planned 2", *order]
    done = [e for e in seen if e.kind == "finished"]  # each once its teardown has ended: its whole time
    assert [e.duration_s for e in done] == [c["duration_s"] for c in doc["cells"]]
    assert all(c["time_split_s"]["teardown"] > 0 for c in doc["cells"])
    assert [e.status for e in done] == ["ok", "ok"] and done[1].params == {"containers": 2}
    assert not any(line.startswith("[1/2]") for line in lines)  # the events replace the [i/n] lines


@pytest.mark.mounts
def test_run_off_a_terminal_prints_plain_progress_lines(tiny: Path, tmp_path: Path) -> None:
    scenario = tiny
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
            "--order",
            "planned",
            "--target-ci",
            "0",
        ],
    )
    assert r.exit_code == 0, r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("[")]
    ended = r"ok in [0-9.]+ \S+; elapsed [0-9.]+ \S+, ETA [0-9.]+ \S+"
    assert progress[0] == "[1/2] tiny null on dir (containers=1)"
    assert re.fullmatch(r"\[1/2\] tiny null on dir \(containers=1\): " + ended, progress[1]), progress
    assert progress[2] == "[2/2] tiny null on dir (containers=2)"
    assert re.fullmatch(r"\[2/2\] tiny null on dir \(containers=2\): " + ended, progress[3]), progress
    assert "\x1b[" not in r.stderr  # no bar, no colours
