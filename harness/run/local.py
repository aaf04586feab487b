"""A run's cells here, one after another: the executor of a run that has no fleet.

`LocalExecutor` is `runner.Executor` for this machine: it chooses the drivers and
backings that work here, readies the work root (the run's environment in effect, the
disk checked), and runs each cell in a run directory of its own with a ledger, on a
family template when `--templates` gives one, its teardown beside the next cell's
set-up with `--overlap-teardown`. The runner keeps the results document.

`sigterm_as_interrupt` and `run_directory` are also what a fleet host's cell process
uses (harness/run/fleet.py), so a cell runs there as it runs here.
"""

from __future__ import annotations

import functools
import os
import signal
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from layerbench import environment
from layerbench.analysis.results_model import CellResult, RunDocument
from layerbench.driver import Driver
from layerbench.environment import RunEnvironment
from layerbench.errors import UserError
from layerbench.kernel import safety
from layerbench.plugins import Plugins
from layerbench.run.cell import measure_cell
from layerbench.run.estimates import check_disk, estimate_bytes, estimate_inodes
from layerbench.run.ledger import LEDGER_NAME, Ledger
from layerbench.run.plan import Cell, Here, RunConfig
from layerbench.run.progress import CellEvent, CellEvents
from layerbench.run.sampling import Sampling
from layerbench.run.teardown import Overlap
from layerbench.run.templates import Templates, build_template
from layerbench.scenario import Scenario

__all__ = ["LocalExecutor", "Progress", "sigterm_as_interrupt", "run_directory", "interrupted_cell"]

Progress = Callable[[str], None]


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) raise KeyboardInterrupt, so a terminated run ends as an
    interrupted one: cleaned up, cells kept. A signal the process was started with ignored stays
    ignored: `nohup layerbench run` goes on when its terminal closes."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {
        sig: signal.signal(sig, handler)
        for sig in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def run_directory(work_root: Path) -> Iterator[tuple[Path, Ledger]]:
    """The run's own directory under `work_root` and its ledger (harness/run/ledger.py); both gone after."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    ledger = Ledger(run_dir / LEDGER_NAME).open()
    try:
        yield run_dir, ledger
    finally:
        ledger.close()
        (run_dir / LEDGER_NAME).unlink(missing_ok=True)
        safety.remove_tree(run_dir)


def interrupted_cell(cell: Cell) -> CellResult:
    """The result of a cell Ctrl-C stopped: kept in the results file, so `--resume` runs it again."""
    return CellResult(
        cell.scenario.name, cell.driver.name, cell.params, cell.backing, status="interrupted", error="interrupted"
    )


def _tell(
    events: CellEvents,
    total: int,
    kind: Literal["planned", "started", "finished"],
    index: int,
    cell: Cell,
    result: CellResult | None = None,
) -> None:
    """Tell `events` of the run's `index`th cell (of `total`); once finished, its duration and status."""
    events(
        CellEvent(
            kind,
            index,
            total,
            cell.scenario.name,
            cell.driver.name,
            cell.params,
            cell.backing,
            None if result is None else result.duration_s,
            None if result is None else result.status,
        )
    )


@dataclass
class _Here:
    """What the cells of one run here share: where they go, what they were given, what tells of them."""

    doc: RunDocument
    env: RunEnvironment
    run_dir: Path
    ledger: Ledger
    templates: Templates | None
    overlap: Overlap
    event: Callable[..., None]
    progress: Progress
    save: Callable[[], None]
    total: int


class LocalExecutor:
    """`runner.Executor` for this machine. `events`, if given, hears of each cell planned, started and
    finished (harness/run/progress.py) instead of the `[i/n]` lines."""

    def __init__(self, config: RunConfig, events: CellEvents | None = None) -> None:
        self.config = config
        self.events = events
        self._here = Here(config.containerd_address)

    def select(self, plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
        return self._here.select(plugins, names)

    def plan(self, scenarios: list[Scenario], drivers: list[type[Driver]], config: RunConfig) -> list[Cell]:
        cells = self._here.plan(scenarios, drivers, config)
        if cells and config.cold and os.geteuid() != 0:
            raise UserError("--cold drops the page cache, which needs root")
        return cells

    def prepare(self, config: RunConfig, cells: list[Cell], progress: Progress, scope: ExitStack) -> RunEnvironment:
        """The work root made ready and the run's environment in effect for `scope`; the disk checked."""
        work_root = safety.prepare_work_root(config.work_root or safety.DEFAULT_WORK_ROOT)
        env = scope.enter_context(environment.applied(config.environment(work_root)))
        if cells:
            check_disk(cells, work_root, progress)
        return env

    def execute(
        self,
        doc: RunDocument,
        cells: list[tuple[Cell, Sampling]],
        progress: Progress,
        env: RunEnvironment,
        save: Callable[[], None],
    ) -> Generator[CellResult, None, None]:
        """Each cell's result as its samples end (its teardown may still run: `save` once it has ended)."""
        assert env.work_root is not None  # `prepare` made it
        with run_directory(env.work_root) as (run_dir, ledger):
            planned = [cell for cell, _ in cells]
            templates = (
                Templates.plan(run_dir, planned, lambda c: (estimate_bytes(c), estimate_inodes(c)), ledger)
                if self.config.templates
                else None
            )
            overlap = Overlap(self.config.overlap_teardown)  # a cell's teardown beside the next one's set-up
            event = functools.partial(_tell, self.events or (lambda e: None), len(cells))
            here = _Here(doc, env, run_dir, ledger, templates, overlap, event, progress, save, len(cells))
            for i, cell in enumerate(planned, 1):
                event("planned", i, cell)
            try:
                with sigterm_as_interrupt():
                    for i, (cell, sampling) in enumerate(cells, 1):
                        yield self._cell(here, i, cell, sampling)
            finally:
                overlap.wait()  # the last cell's teardown: its figures and its resources
                if templates:
                    templates.close()

    def _cell(self, here: _Here, i: int, cell: Cell, sampling: Sampling) -> CellResult:
        """Run the run's `i`th cell, on its family's template if it has one; Ctrl-C: an interrupted result."""
        if self.events is None:
            here.progress(f"[{i}/{here.total}] {cell.describe()}")
        here.event("started", i, cell)
        try:
            template, build_s = (
                here.templates.get(cell, functools.partial(build_template, cell, ledger=here.ledger, env=here.env))
                if here.templates
                else (None, 0.0)
            )
            result = measure_cell(
                cell,
                here.run_dir / f"cell{i}",
                sampling,
                here.doc.timer_ns,
                here.ledger,
                template,
                overlap=here.overlap,
                spent_s=build_s,  # the family's build is this cell's set-up
                released=functools.partial(_released, here, i, cell),
                env=here.env,
            )
            if here.templates:
                here.templates.done(cell)
        except KeyboardInterrupt:
            return interrupted_cell(cell)
        return result


def _released(here: _Here, i: int, cell: Cell, result: CellResult) -> None:
    """A cell's teardown has ended: its whole duration is known."""
    here.event("finished", i, cell, result)
    if result.status == "error":
        here.progress(f"    error: {result.error}")
    if any(c is result for c in here.doc.cells):  # overlapped: saved before, now with its teardown
        here.save()
