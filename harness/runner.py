"""The runner: plans cells, checks the disk, runs each cell on a fresh store, saves results.

A cell is one scenario x one driver x one parameter set x one backing filesystem.
It makes its own backing store and driver home and releases both, after errors
and interrupts too. The results file is rewritten after every cell.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from . import backing, machine, results
from .driver import Driver, Style
from .errors import UserError
from .image import apply_layer
from .plugins import Plugins, default_plugins
from .scenario import Scenario, resolve_scenarios
from .steps import OPS, SampleState

__all__ = ["Cell", "RunConfig", "plan_cells", "estimate_bytes", "run_cell", "run", "select_drivers"]

_MiB = 1 << 20


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    driver: type[Driver]
    params: dict[str, Any]
    backing: str

    def describe(self) -> str:
        p = results.params_text(self.params)
        return f"{self.scenario.name} {self.driver.name}" + (f" {p}" if p else "") + f" on {self.backing}"


@dataclass
class RunConfig:
    scenarios: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    results_dir: Path = Path("results")
    label: str = "run"
    work_root: Path | None = None
    samples: int | None = None
    warmup: int | None = None
    overrides: dict[str, list[Any]] = field(default_factory=dict)


def default_backing(driver: type[Driver]) -> str:
    """The first backing the driver can sit on that this machine can make."""
    for fstype in driver.backings:
        if backing.unavailable(fstype) is None:
            return fstype
    return driver.backings[0]


def plan_cells(scenarios: list[Scenario], drivers: list[type[Driver]]) -> list[Cell]:
    """Every scenario x driver x parameter set, on each driver's default backing."""
    return [
        Cell(scenario=s, driver=d, params=p, backing=default_backing(d))
        for s in scenarios
        for d in drivers
        for p in s.param_sets()
    ]


def estimate_bytes(cell: Cell) -> int:
    """An upper bound of the bytes the cell's backing store will hold at its fullest."""
    image = cell.scenario.image(cell.params)
    total = image.total_bytes
    per_sample = sum(int(s.args.get("count", 1)) for s in cell.scenario.steps(cell.params) if s.op == "start")
    if cell.driver.style is Style.COPY:
        cumulative = sum(sum(f.size for layer in image.layers[: i + 1] for f in layer) for i in range(len(image.layers)))
        need = cumulative + per_sample * total
    else:
        biggest = max((f.size for layer in image.layers for f in layer), default=0)
        need = total + per_sample * (_MiB + biggest)
    files = image.total_files * (1 + (per_sample if cell.driver.style is Style.COPY else 0))
    return int(need * 1.3) + files * 8192 + 96 * _MiB


def select_drivers(plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
    """The drivers to run and, by name, why the others asked for cannot run here."""
    if names:
        chosen = [plugins.driver(n) for n in dict.fromkeys(names)]
    else:  # every driver but null, which measures the harness, not storage
        chosen = [cls for name, cls in sorted(plugins.registry.drivers.items()) if name != "null"]
    runnable, skipped = [], {}
    for cls in chosen:
        reason = cls.probe()
        if reason is None:
            runnable.append(cls)
        else:
            skipped[cls.name] = reason
    return runnable, skipped


def _build_image(cell: Cell, driver: Driver) -> str:
    image = cell.scenario.image(cell.params)
    parent: str | None = None
    for i, files in enumerate(image.layers):
        layer_id = f"layer{i}"
        apply_layer(driver.create_layer(layer_id, parent), files, driver.layer_format)
        driver.seal_layer(layer_id)
        parent = layer_id
    assert parent is not None
    return parent


def run_cell(cell: Cell, workdir: Path, samples: int | None = None, warmup: int | None = None) -> dict[str, Any]:
    """Run one cell in `workdir` (created and removed here) and return its result."""
    n_samples = samples if samples is not None else cell.scenario.samples
    n_warmup = warmup if warmup is not None else cell.scenario.warmup
    out: dict[str, Any] = {
        "scenario": cell.scenario.name,
        "driver": cell.driver.name,
        "params": cell.params,
        "backing": cell.backing,
        "status": "running",
        "error": None,
        "samples": n_samples,
        "warmup": n_warmup,
        "metrics": {},
        "inspect": {},
    }
    recorded: dict[str, list[int]] = defaultdict(list)
    started = time.monotonic()
    workdir.mkdir(mode=0o700)
    store = backing.BackingStore(workdir, cell.backing, estimate_bytes(cell))
    driver: Driver | None = None
    try:
        mnt = store.open()
        home = mnt / cell.driver.name
        home.mkdir(mode=0o700)
        base, base_walk = store.usage(), backing.allocated_bytes(mnt)
        driver = cell.driver(home)
        driver.setup()
        top = _build_image(cell, driver)
        recorded["image_disk_bytes"].append(store.usage().bytes - base.bytes)
        out["inspect"]["image"] = driver.inspect(top)
        steps = cell.scenario.steps(cell.params)

        def keep(metric: str, value: int) -> None:
            recorded[metric].append(value)

        def drop(metric: str, value: int) -> None:
            pass

        for rep in range(n_warmup + n_samples):
            state = SampleState(driver, top, store, base, base_walk, prefix=f"s{rep}")
            for step in steps:
                OPS[step.op](state, step.args, step.measure, keep if rep >= n_warmup else drop)
            if rep == n_warmup and state.containers:
                out["inspect"]["container"] = driver.inspect(state.containers[-1])
            # After a failure, driver.close() below releases what the sample left.
            for cid in reversed(state.mounted):
                driver.unmount(cid)
            for cid in reversed(state.containers):
                driver.remove(cid)
            driver.settle()
        out["status"] = "ok"
    except KeyboardInterrupt:
        out["status"] = "interrupted"
        raise
    except Exception as exc:
        out["status"] = "error"
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            if driver is not None:
                driver.close()
        finally:
            store.close()
            shutil.rmtree(workdir, ignore_errors=True)
        out["metrics"] = {m: {"unit": results.unit_of(m), "samples": v} for m, v in recorded.items()}
        out["duration_s"] = round(time.monotonic() - started, 3)
    return out


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _human_bytes(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / _MiB:.0f} MiB"


Progress = Callable[[str], None]


def run(config: RunConfig, plugins: Plugins | None = None, progress: Progress = lambda s: None) -> tuple[dict[str, Any], Path]:
    """Run the configured suite; return the results document and where it was saved."""
    plugins = plugins or default_plugins()
    scenarios = resolve_scenarios(config.scenarios, config.overrides)
    drivers, skipped = select_drivers(plugins, config.drivers)
    for name, reason in skipped.items():
        progress(f"skipping driver {name}: {reason}")
    if not drivers:
        raise UserError("no driver can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    cells = plan_cells(scenarios, drivers)

    work_parent = config.work_root or Path(os.environ.get("TMPDIR", "/var/tmp"))
    work_parent.mkdir(parents=True, exist_ok=True)
    need = max(estimate_bytes(c) for c in cells)
    free = shutil.disk_usage(work_parent).free
    biggest = max(cells, key=estimate_bytes)
    if free < need:
        raise UserError(
            f"not enough free disk under {work_parent}: the largest cell ({biggest.describe()}) needs "
            f"{_human_bytes(need)}, {_human_bytes(free)} is free; free some space or pass --work-root"
        )
    progress(f"{len(cells)} cells; the largest needs {_human_bytes(need)} of disk ({_human_bytes(free)} free)")

    doc = results.new_document(config.label, machine.machine_info(), machine.tool_info())
    doc["helpers"] = backing.mkfs_versions(sorted({c.backing for c in cells} - {"dir"}))
    for cls in drivers:
        doc["helpers"].update(cls.versions())
    doc["drivers"] = {
        **{d.name: {"style": d.style.value, "available": True, "reason": None} for d in drivers},
        **{n: {"style": plugins.driver(n).style.value, "available": False, "reason": r} for n, r in skipped.items()},
    }
    doc["scenarios"] = {
        s.name: {"path": s.path, "sha256": s.sha256, "description": s.description, "params": s.params,
                 "samples": config.samples or s.samples, "warmup": s.warmup if config.warmup is None else config.warmup}
        for s in scenarios
    }
    stamp = doc["started_utc"].replace("-", "").replace(":", "")
    path = config.results_dir / machine.machine_name() / f"{stamp}_{config.label}.json"
    results.save(doc, path)

    workdir = Path(tempfile.mkdtemp(prefix="layerbench-", dir=work_parent))
    try:
        with _sigterm_as_interrupt():
            for i, cell in enumerate(cells, 1):
                progress(f"[{i}/{len(cells)}] {cell.describe()}")
                try:
                    result = run_cell(cell, workdir / f"cell{i}", config.samples, config.warmup)
                except KeyboardInterrupt:
                    doc["cells"].append({"scenario": cell.scenario.name, "driver": cell.driver.name,
                                         "params": cell.params, "backing": cell.backing,
                                         "status": "interrupted", "error": "interrupted", "metrics": {}})
                    doc["status"] = "interrupted"
                    raise
                finally:
                    if doc["status"] == "interrupted":
                        doc["finished_utc"] = results.utc_now()
                        results.save(doc, path)
                doc["cells"].append(result)
                if result["status"] == "error":
                    progress(f"    error: {result['error']}")
                results.save(doc, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    doc["status"] = "finished"
    doc["finished_utc"] = results.utc_now()
    results.save(doc, path)
    return doc, path
