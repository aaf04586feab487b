"""A fleet as one run: the planned cells on the hosts of a Dask cluster (docs/fleet.md).

The client (`run_fleet`) asks every worker what its host is and which drivers and
backings it can use, plans the cells per host (every cell on every host, or with
`spread` each cell once on any host), and hands them to `runner.run`, which writes
the results file after every cell as a local run does. Each cell is a Dask task
that holds its host's one `host` resource, so a host runs one cell at a time.

On the worker, `run_on_host` runs the cell in a child process of its own with
`run/cell.run_cell`, this host's work root and a ledger, as a local run does: the
child's main thread keeps the cell's time limit (SIGALRM) and the rootless drivers'
fork, and no Dask thread shares its interpreter while it measures.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import CancelledError
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbench import environment
from layerbench.analysis.results_model import CellResult, RunDocument
from layerbench.driver import Driver
from layerbench.environment import RunEnvironment
from layerbench.errors import RunStopped, UserError
from layerbench.kernel import safety
from layerbench.plugins import Plugins, default_plugins
from layerbench.run import backing, machine, overhead, runner
from layerbench.run.cell import measure_cell
from layerbench.run.estimates import check_disk
from layerbench.run.fleet_services import HOST_ENV, HOST_RESOURCE, WORK_ROOT_ENV, host_resource
from layerbench.run.fleet_tls import FleetTLS
from layerbench.run.local import Progress, run_directory, sigterm_as_interrupt
from layerbench.run.plan import Cell, RunConfig, plan_cells, select_drivers
from layerbench.run.sampling import Sampling
from layerbench.scenario import Scenario

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = [
    "HOST_RESOURCE",
    "require_dask",
    "run_fleet",
    "run_fleet_results",
    "SchedulerLost",
    "FleetExecutor",
    "describe_host",
    "run_on_host",
]

STARTED = "layerbench-cell-started"  # the Dask event topic of cells that began on their host
HOST_GRACE_S = 120.0  # a host gone this long (rebooted, unplugged) has its waiting cells recorded as errors


def require_dask() -> None:
    """Raise a one-line UserError unless dask and distributed are installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UserError("a fleet run needs dask and distributed: pip install 'layerbench[fleet]'") from None


class SchedulerLost(RunStopped):
    """The fleet's scheduler went away mid-run: the run stops, marked interrupted, for `--resume`."""


# --- the worker side ---------------------------------------------------------------------------------------


def _this_host() -> tuple[str, Path]:
    host, root = os.environ.get(HOST_ENV), os.environ.get(WORK_ROOT_ENV)
    if not host or not root:
        raise UserError(
            f"this Dask worker was not started by `layerbench worker` ({HOST_ENV} and {WORK_ROOT_ENV} "
            f"are not set; docs/fleet.md)"
        )
    return host, Path(root)


def describe_host(names: tuple[str, ...], containerd_address: str | None = None) -> dict[str, Any]:
    """Run on a worker: its host's name, machine, work root, and why it cannot run a driver or make a backing
    (containerd's drivers on the daemon at `containerd_address` on this host, when given)."""
    try:
        host, work_root = _this_host()
    except UserError as exc:
        return {"error": str(exc)}
    info = machine.machine_info(work_root)
    if not info["root"]:
        return {"name": host, "error": "the worker does not run as root (cells mount file systems)"}
    plugins = default_plugins()
    runnable, skipped = select_drivers(plugins, names, containerd_address)
    fstypes = sorted({b for cls in runnable for b in cls.backings})
    helpers = backing.mkfs_versions([b for b in fstypes if b != "dir"])
    for cls in runnable:
        helpers.update(cls.versions())
    return {
        "name": host,
        "machine": info,
        "work_root": str(work_root),
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "drivers": {**{cls.name: None for cls in runnable}, **skipped},
        "backings": {b: backing.unavailable(b) for b in fstypes},
        "helpers": helpers,
        "overhead": overhead.measure(plugins.registry.drivers.get("null")),
    }


def _error_cell(plain: dict[str, Any], host: str | None, error: str) -> CellResult:
    """The result of a cell (as `Cell.to_plain` describes it) that failed before it measured anything."""
    return CellResult(
        plain["name"], plain["driver"], plain["params"], plain["backing"], status="error", error=error, host=host or ""
    )


def run_on_host(plain: dict[str, Any], sampling: dict[str, Any], env: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Dask task: run the cell `Cell.to_plain` described on this host, in a child process, in the run's
    environment `env` (`RunEnvironment.to_plain`) on this host's work root; its result with `host`, as its
    JSON record (`CellResult.to_dict`: the wire format between the cell's process, the worker and the client)."""
    from distributed import get_worker

    host, work_root = _this_host()
    worker = get_worker()
    worker.log_event(STARTED, {"key": worker.get_current_task(), "host": host})
    request = {
        "cell": plain,
        "sampling": sampling,
        "env": env or {},
        "work_root": str(work_root),
        "parent": os.getpid(),
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from layerbench.run.fleet import _cell_main; _cell_main()"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not proc.stdout:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return _error_cell(plain, host, f"the cell's process on {host} exited with {proc.returncode}: {last}").to_dict()
    result: dict[str, Any] = json.loads(proc.stdout)
    result["host"] = host
    return result


def _die_with_parent(parent: int) -> None:
    """Get SIGTERM (and so release the cell, as after Ctrl-C) when the worker that started us dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit("the worker that started this cell is gone")


def _cell_main() -> None:
    """The cell's own process: run it as a local run does, with a ledger under this host's work root.

    Reads the request on stdin; writes the result as its JSON record on stdout (anything else the cell
    prints goes to stderr).
    """
    request = json.loads(sys.stdin.read())
    _die_with_parent(request["parent"])
    out = os.dup(1)
    os.dup2(2, 1)
    plugins = default_plugins()
    try:
        cell = Cell.from_plain(request["cell"], plugins)
        if (reason := cell.driver.probe()) is not None:
            raise UserError(f"driver {cell.driver.name} cannot run on this host: {reason}")
        work_root = safety.prepare_work_root(Path(request["work_root"]))
        env = RunEnvironment.from_plain(request["env"], work_root)
        with environment.applied(env):
            check_disk([cell], work_root, lambda line: None)
            timer_ns = overhead.measure(plugins.registry.drivers.get("null"))["timer_ns"]
            with run_directory(work_root) as (run_dir, ledger), sigterm_as_interrupt():
                sampling = Sampling(**request["sampling"])
                result = measure_cell(cell, run_dir / "cell", sampling, timer_ns, ledger, env=env)
    except UserError as exc:
        result = _error_cell(request["cell"], None, f"UserError: {exc}")
    os.write(out, json.dumps(result.to_dict()).encode())


# --- the client side ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    cell: Cell
    plain: dict[str, Any]
    sampling: dict[str, Any]
    turn: int  # its place in the run's order: earlier cells go first on a host
    env: dict[str, Any]  # the run's environment (RunEnvironment.to_plain), applied on the host


class FleetExecutor:
    """`runner.Executor` over a Dask cluster's layerbench workers, one per host."""

    def __init__(
        self,
        client: Client,
        spread: bool = False,
        host_grace_s: float = HOST_GRACE_S,
        progress: Progress = lambda line: None,
        containerd_address: str | None = None,
    ) -> None:
        self.client, self.spread, self.host_grace_s, self.progress = client, spread, host_grace_s, progress
        self.containerd_address = containerd_address  # the same socket path on every host (docs/fleet.md)
        self.hosts: dict[str, dict[str, Any]] = {}  # name -> describe_host()
        self.address = str(client.scheduler.address if client.scheduler else "?")

    def select(self, plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        hosts = [addr for addr, w in workers.items() if HOST_RESOURCE in (w.get("resources") or {})]
        if not hosts:
            raise UserError(
                f"{self.client.scheduler_info()['address']}: no layerbench worker is connected; start "
                f"`layerbench worker` on each host (docs/fleet.md)"
            )
        boots: dict[str, str] = {}
        unusable = []
        for desc in self.client.run(describe_host, names, self.containerd_address, workers=hosts).values():
            if "error" in desc:
                unusable.append(f"host {desc.get('name', '?')}: not used: {desc['error']}")
                self.progress(unusable[-1])
                continue
            self.hosts[desc["name"]] = desc
            if (other := boots.setdefault(desc["boot_id"], desc["name"])) != desc["name"]:
                self.progress(
                    f"warning: hosts {other} and {desc['name']} are one machine: their cells' timings share it"
                )
        if not self.hosts:
            raise UserError("no host of the fleet can run cells: " + "; ".join(unusable))
        available, skipped = [], {}
        for name in dict.fromkeys(n for d in self.hosts.values() for n in d["drivers"]):
            why = {h: d["drivers"][name] for h, d in sorted(self.hosts.items()) if d["drivers"].get(name)}
            for h, reason in why.items():
                self.progress(f"host {h}: skipping driver {name}: {reason}")
            if len(why) == len(self.hosts):
                skipped[name] = "; ".join(f"{h}: {r}" for h, r in why.items())
            else:
                cls = plugins.driver(name)
                available.append(cls.at(self.containerd_address) if cls.engine == "containerd" else cls)
        return available, skipped

    def _can(self, host: str, cell: Cell) -> bool:
        d = self.hosts[host]
        return d["drivers"].get(cell.driver.name, "") is None and d["backings"].get(cell.backing, "") is None

    def plan(self, scenarios: list[Scenario], drivers: list[type[Driver]], config: RunConfig) -> list[Cell]:
        for h, d in sorted(self.hosts.items()):
            for b in config.backings:
                if (why := d["backings"].get(b, "no driver asked for can sit on it")) is not None:
                    self.progress(f"host {h}: skipping --backing {b}: {why}")
        if self.spread:

            def nowhere(fstype: str) -> str | None:
                reasons = [d["backings"].get(fstype, "unknown") for d in self.hosts.values()]
                return None if None in reasons else "; ".join(map(str, reasons))

            return plan_cells(scenarios, drivers, config.backings, nowhere)
        cells = []
        for h, d in sorted(self.hosts.items()):
            here = [cls for cls in drivers if d["drivers"].get(cls.name, "") is None]
            cells += plan_cells(scenarios, here, config.backings, d["backings"].get, host=h)
        return cells

    def _resources(self, cell: Cell, turn: int) -> dict[str, int]:
        """The host's slot, and the host's own resource when the cell must run on one host."""
        if cell.host is not None:
            return {HOST_RESOURCE: 1, host_resource(cell.host): 1}
        able = sorted(h for h in self.hosts if self._can(h, cell))
        if len(able) == len(self.hosts):
            return {HOST_RESOURCE: 1}
        return {HOST_RESOURCE: 1, host_resource(able[turn % len(able)]): 1} if able else {HOST_RESOURCE: 1}

    def _submit(self, job: _Job) -> Future:
        return self.client.submit(
            run_on_host,
            job.plain,
            job.sampling,
            job.env,
            pure=False,
            priority=-job.turn,
            resources=self._resources(job.cell, job.turn),
            key=f"layerbench-cell-{job.turn}-{job.cell.host or 'any'}-{os.urandom(4).hex()}",
        )

    def _never_started(self, future: Future) -> bool:
        """The task's worker died before the task began (it was waiting there for the host's slot)."""
        from distributed import KilledWorker

        started = {event.get("key") for _, event in self.client.get_events(STARTED)}
        return isinstance(future.exception(), KilledWorker) and future.key not in started

    def _failed(self, job: _Job, future: Future) -> CellResult:
        from distributed import KilledWorker

        exc = future.exception()
        if isinstance(exc, KilledWorker):
            host = job.cell.host or getattr(exc.last_worker, "name", None)
            root = self.hosts.get(str(host), {}).get("work_root", "its work root")
            return _error_cell(
                job.plain,
                host,
                f"KilledWorker: the worker on host {host} died while it ran the "
                f"cell; `layerbench cleanup --work-root {root}` there releases "
                f"what it left",
            )
        return _error_cell(job.plain, job.cell.host, f"{type(exc).__name__}: {exc}")

    def prepare(self, config: RunConfig, cells: list[Cell], progress: Progress, scope: ExitStack) -> RunEnvironment:
        """Nothing to ready here: each host uses and checks its own work root; the run's environment without one."""
        return config.environment(None)

    def execute(
        self,
        doc: RunDocument,
        cells: list[tuple[Cell, Sampling]],
        progress: Progress,
        env: RunEnvironment,
        save: Callable[[], None],
    ) -> Generator[CellResult, None, None]:
        """Each cell's result as its host sends it (its teardown has ended there: `save` is not needed)."""
        self._record_hosts(doc)
        jobs: dict[Future, _Job] = {}
        for i, (cell, sampling) in enumerate(cells):
            job = _Job(cell, cell.to_plain(), dataclasses.asdict(sampling), i, env.to_plain())
            jobs[self._submit(job)] = job
        gone: dict[str, float] = {}  # host -> when it was first seen missing
        n = 0
        try:
            pending = set(jobs)
            while pending:
                time.sleep(0.2)
                for future, result in self._finished(pending, jobs, gone):
                    pending.discard(future)
                    n += 1
                    progress(
                        f"[{n}/{len(cells)}] {jobs[future].cell.describe(result.host)}: {result.status}"
                        + (f": {result.error}" if result.error else "")
                    )
                    yield result
        finally:
            if self.client.status == "running":
                self.client.cancel(list(jobs))

    def _record_hosts(self, doc: RunDocument) -> None:
        """The document's `hosts`: each host's machine, work root, helpers, overhead, backings and drivers."""
        if doc.fleet_hosts is None:
            doc.fleet_hosts = {}
        hosts = doc.fleet_hosts
        for name, d in self.hosts.items():
            hosts[name] = {
                "machine": d["machine"],
                "work_root": d["work_root"],
                "helpers": d["helpers"],
                "overhead": d["overhead"],
                "backings": d["backings"],
                "drivers": {n: {"available": r is None, "reason": r} for n, r in d["drivers"].items()},
            }

    def _finished(
        self, pending: set[Future], jobs: dict[Future, _Job], gone: dict[str, float]
    ) -> list[tuple[Future, CellResult]]:
        """The cells that ended since the last look, each with its result (an error for a failed task or a gone
        host's cell); a task whose worker died before it began is submitted again, as a new pending one."""
        done = [f for f in pending if f.done()]
        self._check_scheduler()  # after `done`: a lost scheduler's futures are cancelled, not failed
        pending.difference_update(done)
        finished = []
        try:
            for f in done:
                if f.status == "finished":
                    finished.append((f, CellResult.from_dict(f.result())))  # its JSON record, off the wire
                elif self._never_started(f):
                    again = self._submit(jobs[f])
                    jobs[again] = jobs[f]
                    pending.add(again)
                else:
                    finished.append((f, self._failed(jobs[f], f)))
            finished += self._abandon_gone_hosts(pending, jobs, gone)
        except (OSError, CancelledError) as exc:  # distributed's CommClosedError is an OSError
            self._check_scheduler()
            raise SchedulerLost(f"lost the scheduler at {self.address}: {exc}") from None
        return finished

    def _check_scheduler(self) -> None:
        """Raise SchedulerLost once the client has lost its scheduler (its futures are gone with it)."""
        if self.client.status != "running":
            raise SchedulerLost(f"the scheduler at {self.address} went away mid-run")

    def _abandon_gone_hosts(
        self, pending: set[Future], jobs: dict[Future, _Job], gone: dict[str, float]
    ) -> list[tuple[Future, CellResult]]:
        """Errors for the waiting cells of a host whose worker has been gone longer than the grace."""
        here = {w.get("name") for w in self.client.scheduler_info(n_workers=-1)["workers"].values()}
        now = time.monotonic()
        for h in self.hosts:
            if h in here:
                gone.pop(h, None)
            else:
                gone.setdefault(h, now)
        lost = {h for h, since in gone.items() if now - since > self.host_grace_s}
        out = []
        for future in list(pending):
            host = jobs[future].cell.host
            if host in lost:
                self.client.cancel([future])
                out.append(
                    (
                        future,
                        _error_cell(
                            jobs[future].plain,
                            host,
                            f"host {host} left the fleet (its worker has been gone for over {self.host_grace_s:g} s)",
                        ),
                    )
                )
        return out


def _fail_fast(dask_scheduler: Any) -> int:
    """On the scheduler: a task whose worker dies fails at once (KilledWorker) instead of running again."""
    previous = int(dask_scheduler.allowed_failures)
    dask_scheduler.allowed_failures = 0
    return previous


def run_fleet(
    config: RunConfig,
    address: str,
    tls: FleetTLS,
    progress: Progress = lambda line: None,
    host_grace_s: float = HOST_GRACE_S,
) -> tuple[dict[str, Any], Path]:
    """`run_fleet_results`, with the run's JSON document (as its file holds it) in place of the model."""
    doc, path = run_fleet_results(config, address, tls, progress, host_grace_s)
    return doc.to_dict(), path


def run_fleet_results(
    config: RunConfig,
    address: str,
    tls: FleetTLS,
    progress: Progress = lambda line: None,
    host_grace_s: float = HOST_GRACE_S,
) -> tuple[RunDocument, Path]:
    """Run the configured suite on the hosts of the Dask cluster at `address`; the document and its path."""
    require_dask()
    from distributed import Client

    try:
        with _quiet_dask():
            client = Client(address, timeout=15, set_as_default=False, security=tls.security())
    except (OSError, ValueError) as exc:
        raise UserError(f"--cluster {address}: cannot reach the scheduler: {_first_line(exc)}") from None
    with _quiet_dask(), client:
        try:
            was = client.run_on_scheduler(_fail_fast)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "layerbench").split(".")[0]
            raise UserError(
                f"--cluster {address}: the scheduler cannot import {missing}: start it with "
                f"`layerbench scheduler` from the workers' install (docs/fleet.md)"
            ) from None
        if was != 0:
            progress(f"scheduler: a cell whose worker dies is now an error at once (allowed_failures {was} -> 0)")
        executor = FleetExecutor(client, config.spread, host_grace_s, progress, config.containerd_address)
        return runner.run_results(config, progress=progress, executor=executor)


@contextmanager
def _quiet_dask() -> Iterator[None]:
    """Dask's own log lines on the client (reconnect attempts, chained tracebacks of a lost scheduler)
    are not the user's: what happened is said in one line (SchedulerLost, UserError)."""
    handlers = logging.getLogger("distributed").handlers  # Dask's own; its loggers below set their own levels
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
