"""The run: the planned cells in a seeded order, each on a fresh store, the results document
rewritten after every cell; `--resume` finishes an interrupted one (harness/run/resume.py).

A cell's plan and estimates are harness/run/plan.py's and estimates.py's; running one
is harness/run/cell.py's; an `Executor` runs the cells on a fleet's hosts instead.
"""

from __future__ import annotations

import functools
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from layerbench import environment
from layerbench.analysis import results
from layerbench.analysis.results_model import CellKey, cell_key
from layerbench.driver import Driver
from layerbench.environment import RunEnvironment
from layerbench.errors import RunStopped, UserError
from layerbench.kernel import safety
from layerbench.plugins import Plugins, default_plugins
from layerbench.run import backing, machine, overhead
from layerbench.run.cell import run_cell
from layerbench.run.estimates import check_disk, estimate_bytes, estimate_inodes
from layerbench.run.ledger import LEDGER_NAME, Ledger
from layerbench.run.plan import Cell, Plan, PlannedCell, RunConfig, order_cells, plan, plan_cells, select_drivers
from layerbench.run.progress import CellEvent, CellEvents
from layerbench.run.resume import resume
from layerbench.run.sampling import Sampling
from layerbench.run.teardown import Overlap
from layerbench.run.templates import Templates, build_template
from layerbench.scenario import Scenario, resolve_scenarios

__all__ = [
    "Cell",
    "RunConfig",
    "plan_cells",
    "estimate_bytes",
    "estimate_inodes",
    "run_cell",
    "run",
    "select_drivers",
    "sigterm_as_interrupt",
    "Plan",
    "PlannedCell",
    "plan",
    "Executor",
    "Progress",
]


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) raise KeyboardInterrupt, so a terminated run ends as an
    interrupted one: cleaned up, cells kept."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


Progress = Callable[[str], None]


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


class Executor(Protocol):
    """Runs the planned cells somewhere other than here: on a fleet's hosts (harness/run/fleet.py)."""

    def select(self, plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
        """As `select_drivers`: the drivers some host can run and, by name, why no host can run the others."""

    def plan(self, scenarios: list[Scenario], drivers: list[type[Driver]], config: RunConfig) -> list[Cell]:
        """The cells, each with the host it runs on (None: any host)."""

    def execute(
        self, doc: dict[str, Any], cells: list[tuple[Cell, Sampling]], progress: Progress, env: RunEnvironment
    ) -> Iterator[dict[str, Any]]:
        """Each cell's result as it finishes, each run in `env` on its host's own work root; adds to
        `doc` what it learns about the hosts."""


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


def _tell(
    events: CellEvents,
    total: int,
    kind: Literal["planned", "started", "finished"],
    index: int,
    cell: Cell,
    result: dict[str, Any] | None = None,
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
            None if result is None else result.get("duration_s"),
            None if result is None else result["status"],
        )
    )


def run(
    config: RunConfig,
    plugins: Plugins | None = None,
    progress: Progress = lambda s: None,
    executor: Executor | None = None,
    events: CellEvents | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run the configured suite (or finish an interrupted one) here, or through `executor` on a
    fleet's hosts; return the document and its path. `progress` gets lines of text; `events`, if
    given, each cell planned, started and finished here (harness/run/progress.py), instead of the
    `[i/n]` lines."""
    with ExitStack() as scope:  # the run's environment, in effect while its cells open images here
        return _run(config, plugins or default_plugins(), progress, executor, events, scope)


def _run(
    config: RunConfig,
    plugins: Plugins,
    progress: Progress,
    executor: Executor | None,
    events: CellEvents | None,
    scope: ExitStack,
) -> tuple[dict[str, Any], Path]:
    previous: dict[str, Any] | None = None
    if config.resume is not None:
        safety.check_output_dir(config.resume.parent, "--resume")
        config, previous, resume_path = resume(config)
        if previous["status"] == "finished":
            failed = sum(c["status"] == "error" for c in previous["cells"])
            again = f" (--retry-failed runs its {failed} failed cells again)" if failed else ""
            progress(f"{resume_path}: the run finished at {previous['finished_utc']}; nothing to do{again}")
            return previous, resume_path
    else:
        safety.check_output_dir(config.results_dir, "--results-dir")
    scenarios = resolve_scenarios(config.scenarios, config.overrides, config.quick, config.long)
    if executor is not None:
        drivers, skipped = executor.select(plugins, config.drivers)
    else:
        drivers, skipped = select_drivers(plugins, config.drivers, config.containerd_address)
    for name, reason in skipped.items():
        progress(f"skipping driver {name}: {reason}")
    if not drivers:
        raise UserError("no driver can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    for b in config.backings if executor is None else ():  # a fleet's hosts tell their own
        if (why := backing.unavailable(b)) is not None:
            raise UserError(f"--backing {b}: {why}")
    cells = executor.plan(scenarios, drivers, config) if executor else plan_cells(scenarios, drivers, config.backings)
    if not cells:
        raise UserError(f"no driver can sit on --backing {', '.join(config.backings)}")
    if config.cold and executor is None and os.geteuid() != 0:
        raise UserError("--cold drops the page cache, which needs root")
    cells = order_cells(cells, config.order, config.seed)
    if previous is not None:
        # A cell planned for any host (host None) is done once it is done on one.
        done = {key for c in previous["cells"] for key in (cell_key(c), cell_key(c).any_host())}
        cells = [
            c for c in cells if CellKey.of(c.scenario.name, c.driver.name, c.backing, c.params, c.host) not in done
        ]
        progress(f"resuming {resume_path}: {len(previous['cells'])} cells done, {len(cells)} to go")

    if executor is None:  # a fleet's hosts use and check their own
        work_root = safety.prepare_work_root(config.work_root or safety.DEFAULT_WORK_ROOT)
        env = scope.enter_context(environment.applied(config.environment(work_root)))
        if cells:
            check_disk(cells, work_root, progress)

    if previous is not None:
        doc, path = previous, resume_path
        doc["status"] = "running"
        doc["run"] = results.run_record()
        if executor is None:
            doc["work_root"] = str(work_root)
    else:
        doc = results.new_document(
            config.label, machine.machine_info(work_root if executor is None else None), machine.tool_info()
        )
        if executor is None:  # where its stores are: what `layerbench cleanup --work-root` needs after a crash
            doc["work_root"] = str(work_root)
        doc["helpers"] = backing.mkfs_versions(sorted({c.backing for c in cells} - {"dir"}))
        for cls in drivers:
            doc["helpers"].update(cls.versions())
        doc["drivers"] = {
            **{d.name: {"style": d.style.value, "available": True, "reason": None} for d in drivers},
            **{
                n: {"style": plugins.driver(n).style.value, "available": False, "reason": r} for n, r in skipped.items()
            },
        }
        doc["scenarios"] = {
            s.name: {"path": s.path, "sha256": s.sha256, "description": s.description, "params": s.params}
            for s in scenarios
        }
        doc["overhead"] = overhead.measure(plugins.registry.drivers.get("null"))
        doc["settings"] = config.settings([s.path for s in scenarios], [d.name for d in drivers])
        path = _results_path(config, doc["started_utc"].replace("-", "").replace(":", ""))
    results.save(doc, path)
    if executor is not None:
        try:
            jobs = [(c, _sampling_for(config, c)) for c in cells]
            for result in executor.execute(doc, jobs, progress, config.environment(None)):
                doc["cells"].append(result)
                results.save(doc, path)
        except BaseException as exc:  # Ctrl-C, or the fleet's scheduler lost: what finished is kept, for --resume
            doc["status"] = "interrupted"
            doc["finished_utc"] = results.utc_now()
            results.save(doc, path)
            if isinstance(exc, RunStopped):
                exc.results_path = path
            raise
        doc["status"] = "finished"
        doc["finished_utc"] = results.utc_now()
        results.save(doc, path)
        return doc, path

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    ledger = Ledger(run_dir / LEDGER_NAME).open()
    templates = (
        Templates.plan(run_dir, cells, lambda c: (estimate_bytes(c), estimate_inodes(c)), ledger)
        if config.templates
        else None
    )
    overlap = Overlap(config.overlap_teardown)  # a cell's teardown beside the next one's set-up
    event = functools.partial(_tell, events or (lambda e: None), len(cells))
    for i, cell in enumerate(cells, 1):
        event("planned", i, cell)

    def finished(i: int, cell: Cell, result: dict[str, Any]) -> None:
        """A cell's teardown has ended: its whole duration is known."""
        event("finished", i, cell, result)
        if result["status"] == "error":
            progress(f"    error: {result['error']}")
        if any(c is result for c in doc["cells"]):  # overlapped: saved before, now with its teardown
            results.save(doc, path)

    try:
        with sigterm_as_interrupt():
            for i, cell in enumerate(cells, 1):
                if events is None:
                    progress(f"[{i}/{len(cells)}] {cell.describe()}")
                event("started", i, cell)
                s = cell.scenario
                sampling = _sampling_for(config, cell)
                try:
                    template, build_s = (
                        templates.get(cell, functools.partial(build_template, cell, ledger=ledger, env=env))
                        if templates
                        else (None, 0.0)
                    )
                    result = run_cell(
                        cell,
                        run_dir / f"cell{i}",
                        sampling,
                        doc["overhead"]["timer_ns"],
                        ledger,
                        template,
                        overlap=overlap,
                        spent_s=build_s,  # the family's build is this cell's set-up
                        released=functools.partial(finished, i, cell),
                        env=env,
                    )
                    if templates:
                        templates.done(cell)
                except KeyboardInterrupt:
                    doc["cells"].append(
                        {
                            "scenario": s.name,
                            "driver": cell.driver.name,
                            "params": cell.params,
                            "backing": cell.backing,
                            "status": "interrupted",
                            "error": "interrupted",
                            "metrics": {},
                        }
                    )
                    doc["status"] = "interrupted"
                    doc["finished_utc"] = results.utc_now()
                    results.save(doc, path)
                    raise
                doc["cells"].append(result)  # saved now; again with its teardown once that has ended
                results.save(doc, path)
    finally:
        overlap.wait()  # the last cell's teardown: its figures and its resources
        if templates:
            templates.close()
        ledger.close()
        (run_dir / LEDGER_NAME).unlink(missing_ok=True)
        safety.remove_tree(run_dir)
    doc["status"] = "finished"
    doc["finished_utc"] = results.utc_now()
    results.save(doc, path)
    return doc, path
