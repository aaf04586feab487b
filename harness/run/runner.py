"""The run: prepare, start the results document, hand the cells to an executor.

`run` resumes an interrupted run or checks where a new one writes; chooses its
scenarios, drivers and cells (`plan.choose`) where the executor says, in a seeded
order, leaving out what a resumed run has done; has the executor ready its side (the
work root here); writes the document's header; then takes each cell's result from the
executor as it ends, rewriting the results file after every cell, and ends the run as
finished or interrupted (`_finish`). The executor runs the cells: `LocalExecutor` here
(harness/run/local.py), or `FleetExecutor` on a fleet's hosts (harness/run/fleet.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Generator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from layerbench.analysis import results
from layerbench.analysis.results_model import CellResult, RunDocument
from layerbench.environment import RunEnvironment
from layerbench.errors import RunStopped
from layerbench.kernel import safety
from layerbench.plugins import Plugins, default_plugins
from layerbench.run import backing, machine, overhead
from layerbench.run.cell import run_cell
from layerbench.run.estimates import estimate_bytes, estimate_inodes
from layerbench.run.local import LocalExecutor, Progress, sigterm_as_interrupt
from layerbench.run.plan import (
    Cell,
    Chosen,
    Plan,
    PlannedCell,
    Planner,
    RunConfig,
    choose,
    order_cells,
    plan,
    plan_cells,
    select_drivers,
)
from layerbench.run.progress import CellEvents
from layerbench.run.resume import resume
from layerbench.run.sampling import Sampling
from layerbench.run.templates import build_template

__all__ = [
    "Cell",
    "RunConfig",
    "plan_cells",
    "estimate_bytes",
    "estimate_inodes",
    "run_cell",
    "build_template",
    "run",
    "run_results",
    "select_drivers",
    "sigterm_as_interrupt",
    "Plan",
    "PlannedCell",
    "plan",
    "Executor",
    "LocalExecutor",
    "Progress",
]


class Executor(Planner, Protocol):
    """Where the planned cells run: here (`LocalExecutor`, harness/run/local.py) or on a fleet's hosts
    (harness/run/fleet.py). As a `plan.Planner`, it says which drivers can run there and plans the cells."""

    def prepare(self, config: RunConfig, cells: list[Cell], progress: Progress, scope: ExitStack) -> RunEnvironment:
        """Ready its side for `cells` for as long as `scope` lasts; the run's environment, on the work root
        the stores go under (None when each host has its own)."""

    def execute(
        self,
        doc: RunDocument,
        cells: list[tuple[Cell, Sampling]],
        progress: Progress,
        env: RunEnvironment,
        save: Callable[[], None],
    ) -> Generator[CellResult, None, None]:
        """Each cell's result as it finishes, each run in `env` (on its host's own work root); adds to `doc`
        what it learns about the hosts; calls `save` when a result it gave has changed since (its teardown
        ended). A result with status "interrupted" (Ctrl-C in a cell) is its last."""


def _results_path(config: RunConfig, stamp: str) -> Path:
    """Claim a new results file name (created empty, exclusively): a second run in the
    same second gets a suffix instead of the first run's file."""
    folder = config.results_dir / machine.machine_name()
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = folder / (f"{stamp}_{config.label}.json" if n == 1 else f"{stamp}_{config.label}-{n}.json")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return path
        except FileExistsError:
            n += 1


def _sampling_for(config: RunConfig, cell: Cell) -> Sampling:
    samples, warmup, min_time_s = cell.scenario.repeat(cell.params)
    pinned = config.samples is not None or not cell.scenario.adaptive()
    return Sampling(
        samples=config.samples or samples,
        warmup=warmup if config.warmup is None else config.warmup,
        min_time_s=min_time_s if config.min_time_s is None else config.min_time_s,
        cold=config.cold,
        timeout_s=config.cell_timeout_s,
        target_ci=0.0 if pinned else config.target_ci,
        min_samples=config.min_samples,
        max_samples=config.max_samples,
        budget_s=config.cell_budget_s,
    )


@dataclass
class _Prepared:
    """A run ready to start: its settings, what it runs, and the cells left to run."""

    config: RunConfig
    chosen: Chosen
    cells: list[Cell]  # in the run's order, without the cells a resumed run has done


def run(
    config: RunConfig,
    plugins: Plugins | None = None,
    progress: Progress = lambda s: None,
    executor: Executor | None = None,
    events: CellEvents | None = None,
) -> tuple[dict[str, Any], Path]:
    """`run_results`, with the run's JSON document (as its file holds it) in place of the model: for
    scripts and tests that read the document as JSON."""
    doc, path = run_results(config, plugins, progress, executor, events)
    return doc.to_dict(), path


def run_results(
    config: RunConfig,
    plugins: Plugins | None = None,
    progress: Progress = lambda s: None,
    executor: Executor | None = None,
    events: CellEvents | None = None,
) -> tuple[RunDocument, Path]:
    """Run the configured suite (or finish an interrupted one) here, or through `executor` on a
    fleet's hosts; return the document and its path. `progress` gets lines of text; `events`, if
    given, each cell planned, started and finished here (harness/run/progress.py), instead of the
    `[i/n]` lines."""
    plugins = plugins or default_plugins()
    with ExitStack() as scope:  # the run's environment, in effect while its cells open images here
        if config.resume is not None:
            safety.check_output_dir(config.resume.parent, "--resume")
            config, doc, path = resume(config)
            if doc.status == "finished":
                return _nothing_to_do(doc, path, progress)
            previous: tuple[RunDocument, Path] | None = (doc, path)
        else:
            safety.check_output_dir(config.results_dir, "--results-dir")
            previous = None
        executor = executor or LocalExecutor(config, events)
        prepared = _prepare(config, plugins, executor, previous, progress)
        env = executor.prepare(config, prepared.cells, progress, scope)
        doc, path = _resumed_document(*previous, env) if previous else _new_document(prepared, plugins, env)
        results.save(doc, path)
        return _execute(prepared, executor, doc, path, env, progress)


def _nothing_to_do(doc: RunDocument, path: Path, progress: Progress) -> tuple[RunDocument, Path]:
    failed = sum(c.status == "error" for c in doc.cells)
    again = f" (--retry-failed runs its {failed} failed cells again)" if failed else ""
    progress(f"{path}: the run finished at {doc.finished_utc}; nothing to do{again}")
    return doc, path


def _prepare(
    config: RunConfig,
    plugins: Plugins,
    executor: Executor,
    previous: tuple[RunDocument, Path] | None,
    progress: Progress,
) -> _Prepared:
    """The run's cells where `executor` runs them, in the run's order, less what `previous` has done."""
    chosen = choose(config, plugins, executor, progress)
    cells = order_cells(chosen.cells, config.order, config.seed)
    if previous is not None:
        doc, path = previous
        # A cell planned for any host (host None) is done once it is done on one.
        done = {key for c in doc.cells for key in (c.key, c.key.any_host())}
        cells = [c for c in cells if c.key not in done]
        progress(f"resuming {path}: {len(doc.cells)} cells done, {len(cells)} to go")
    return _Prepared(config, chosen, cells)


def _resumed_document(doc: RunDocument, path: Path, env: RunEnvironment) -> tuple[RunDocument, Path]:
    """The interrupted run's document, running again in this process."""
    doc.status = "running"
    doc.run = results.run_record()
    if env.work_root is not None:
        doc.work_root = str(env.work_root)
    return doc, path


def _new_document(prepared: _Prepared, plugins: Plugins, env: RunEnvironment) -> tuple[RunDocument, Path]:
    """A new run's document, every field but its cells, and the results file claimed for it."""
    config, chosen = prepared.config, prepared.chosen
    doc = results.new_run(config.label, machine.machine_info(env.work_root), machine.tool_info())
    if env.work_root is not None:  # where its stores are: what `layerbench cleanup --work-root` needs after a crash
        doc.work_root = str(env.work_root)
    doc.helpers = backing.mkfs_versions(sorted({c.backing for c in prepared.cells} - {"dir"}))
    for cls in chosen.drivers:
        doc.helpers.update(cls.versions())
    doc.drivers = {
        **{d.name: {"style": d.style.value, "available": True, "reason": None} for d in chosen.drivers},
        **{
            n: {"style": plugins.driver(n).style.value, "available": False, "reason": r}
            for n, r in chosen.skipped.items()
        },
    }
    doc.scenarios = {
        s.name: {"path": s.path, "sha256": s.sha256, "description": s.description, "params": s.params}
        for s in chosen.scenarios
    }
    doc.overhead = overhead.measure(plugins.registry.drivers.get("null"))
    doc.settings = config.settings([s.path for s in chosen.scenarios], [d.name for d in chosen.drivers])
    return doc, _results_path(config, doc.started_utc.replace("-", "").replace(":", ""))


def _execute(
    prepared: _Prepared, executor: Executor, doc: RunDocument, path: Path, env: RunEnvironment, progress: Progress
) -> tuple[RunDocument, Path]:
    """Each cell's result from `executor` into the document, saved after every cell; the run ended as
    finished, or as interrupted (Ctrl-C, a fleet's scheduler lost, any failure) with what finished kept."""
    jobs = [(c, _sampling_for(prepared.config, c)) for c in prepared.cells]
    done = executor.execute(doc, jobs, progress, env, functools.partial(results.save, doc, path))
    with contextlib.closing(done):  # the executor's own clean-up after the document says how the run ended
        try:
            for result in done:
                doc.add(result)  # saved now; again by `save` once its teardown has ended
                if result.status == "interrupted":
                    raise KeyboardInterrupt
                results.save(doc, path)
        except BaseException as exc:  # what finished is kept, for --resume
            _finish(doc, path, "interrupted")
            if isinstance(exc, RunStopped):
                exc.results_path = path
            raise
    _finish(doc, path, "finished")
    return doc, path


def _finish(doc: RunDocument, path: Path, status: str) -> None:
    """End the run as `status`: its end time, the file saved."""
    doc.end(status, results.utc_now())
    results.save(doc, path)
