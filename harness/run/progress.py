"""The live run: what `layerbench run` shows while cells run.

The runner reports each cell as a `CellEvent` (planned, started, finished with its
duration and status). `RunClock` turns those into elapsed time and an ETA learned
from the finished cells; `LiveBar` draws it as a bar on a terminal (rich), and
`PlainLines` as one line per cell where output is not a terminal (CI, pipes).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from layerbench.analysis.results_model import CellKey

__all__ = ["CellEvent", "CellEvents", "RunClock", "PlainLines", "LiveBar", "duration_text", "live_progress"]


@dataclass(frozen=True)
class CellEvent:
    """One cell of a run: planned (before the first one runs), started, or finished."""

    kind: Literal["planned", "started", "finished"]
    index: int  # 1-based position in the run
    total: int
    scenario: str
    driver: str
    params: dict[str, Any]
    backing: str
    duration_s: float | None = None  # finished: the cell's whole time, set-up to tear-down
    status: str | None = None  # finished: ok, error

    @property
    def key(self) -> tuple[str, str]:
        """What the ETA learns by: cells of one scenario on one driver take alike."""
        return self.scenario, self.driver

    def describe(self) -> str:
        """The cell on its progress line: `copy-up overlay2 on ext4 (file_size=4 KiB)` (CellKey.name, human)."""
        return CellKey.of(self.scenario, self.driver, self.backing, self.params).name(human=True)


CellEvents = Callable[[CellEvent], None]


def duration_text(seconds: float) -> str:
    """`0.4 s`, `42 s`, `3 min 05 s`, `1 h 02 min`."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class RunClock:
    """Elapsed time and an ETA from the cells finished so far.

    A cell still to run is expected to take the mean of the finished cells of its scenario
    on its driver, else of its scenario, else of every finished cell; the running cell,
    that less the time it has run (never below zero). No finished cell: no ETA.
    """

    started: float = field(default_factory=time.monotonic)
    planned: dict[int, tuple[str, str]] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    running: tuple[int, float] | None = None  # (index, when it started)
    _by_key: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    _by_scenario: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def update(self, event: CellEvent, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if event.kind == "planned":
            self.planned[event.index] = event.key
        elif event.kind == "started":
            self.planned.setdefault(event.index, event.key)
            self.running = (event.index, now)
        else:
            self.planned.setdefault(event.index, event.key)
            took = (
                event.duration_s
                if event.duration_s is not None
                else now - self.running[1]
                if self.running and self.running[0] == event.index
                else 0.0
            )
            self.finished[event.index] = took
            self._by_key[event.key].append(took)
            self._by_scenario[event.key[0]].append(took)
            if self.running and self.running[0] == event.index:
                self.running = None

    def expected_s(self, key: tuple[str, str]) -> float | None:
        """How long a cell of (scenario, driver) is expected to take; None before any cell finished."""
        for seen in (self._by_key.get(key), self._by_scenario.get(key[0]), list(self.finished.values())):
            if seen:
                return statistics.fmean(seen)
        return None

    def elapsed_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds until every planned cell has finished, or None while nothing has finished."""
        if not self.finished:
            return None
        now = time.monotonic() if now is None else now
        left = 0.0
        for index, key in self.planned.items():
            if index in self.finished:
                continue
            expected = self.expected_s(key) or 0.0
            if self.running and self.running[0] == index:
                expected = max(expected - (now - self.running[1]), 0.0)
            left += expected
        return left

    def eta_text(self, now: float | None = None) -> str:
        eta = self.eta_s(now)
        return "ETA unknown" if eta is None else f"ETA {duration_text(eta)}"


class PlainLines:
    """One line per cell started and finished, with elapsed time and ETA: for CI logs and pipes.
    A cell finishes once its teardown has ended, which may be after the next one started."""

    def __init__(self, out: TextIO | None = None, clock: RunClock | None = None) -> None:
        self.out = out or sys.stderr
        self.clock = clock or RunClock()

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def event(self, event: CellEvent) -> None:
        self.clock.update(event)
        if event.kind == "started":
            self.line(f"[{event.index}/{event.total}] {event.describe()}")
        elif event.kind == "finished":
            took = "" if event.duration_s is None else f" in {duration_text(event.duration_s)}"
            self.line(
                f"[{event.index}/{event.total}] {event.describe()}: {event.status}{took}; "
                f"elapsed {duration_text(self.clock.elapsed_s())}, {self.clock.eta_text()}"
            )

    def close(self) -> None:
        pass


class LiveBar:
    """A bar on the terminal: cells done of planned, the running cell, elapsed time and ETA (rich)."""

    def __init__(self, clock: RunClock | None = None, console: Any = None) -> None:
        """`console`: a rich Console (default: standard error's)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
        from rich.table import Column
        from rich.text import Text

        self.clock = clock or RunClock()
        clock_ = self.clock

        class _Times(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(
                    f"elapsed {duration_text(clock_.elapsed_s())}, {clock_.eta_text()}", style="cyan", no_wrap=True
                )

        current = TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1))
        self._progress = Progress(
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            _Times(table_column=Column(no_wrap=True)),
            current,
            console=console or Console(stderr=True),
            refresh_per_second=2,
            expand=True,
        )
        self._task = self._progress.add_task("starting", total=None)
        self._progress.start()

    def line(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def event(self, event: CellEvent) -> None:
        self.clock.update(event)
        p = self._progress
        if event.kind == "planned":
            p.update(self._task, total=len(self.clock.planned))
        elif event.kind == "started":
            p.update(self._task, total=event.total, description=event.describe())
        else:
            p.update(self._task, total=event.total, completed=len(self.clock.finished))
            if event.status != "ok":
                self.line(f"[{event.index}/{event.total}] {event.describe()}: {event.status}")

    def close(self) -> None:
        self._progress.update(self._task, description="done" if self.clock.running is None else "stopped")
        self._progress.stop()


def live_progress() -> LiveBar | PlainLines:
    """A live bar when standard error is a terminal, else plain lines."""
    from rich.console import Console

    return LiveBar() if Console(stderr=True).is_terminal else PlainLines()
