"""What a report says, independent of its format: one `Report` (report/model.py) built from result files.

`build` merges the runs, summarises every cell's metrics (harness/analysis/stats.py), works
out each driver's ratio to the baseline driver, and collects the claims check,
warnings and errors. report_md.py, report_html.py and `render` turn it into text.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerbench.analysis import claims, results
from layerbench.analysis.results_model import CellKey, CellResult, RunDocument, run_document
from layerbench.errors import UserError
from layerbench.report.engines import engine_overheads
from layerbench.report.model import Report, RunRecord, row_key
from layerbench.report.params import REPEAT_PARAMS, other_params, params_key
from layerbench.report.rows import MetricRow, Slope, metric_rows
from layerbench.report.table import run_facts, run_warnings
from layerbench.report.verdict import verdict, verdict_dict

__all__ = [
    "Report",
    "RunRecord",
    "MetricRow",
    "Slope",
    "build",
    "render",
    "render_csv",
    "render_json",
    "read_all",
    "params_key",
    "row_key",
    "other_params",
    "REPEAT_PARAMS",
    "fit_slopes",
    "slope_text",
    "SLOPES",
    "DEFAULT_BASELINE",
    "MIN_R2",
]

DEFAULT_BASELINE = "overlay2"
#: (metric, swept parameter, one step of it): how a metric grows, fitted per driver
SLOPES: tuple[tuple[str, str, str], ...] = (
    ("startup_ns", "layers", "layer"),
    ("startup_ns", "files", "file"),
    ("startup_ns", "containers", "container"),
    ("disk_bytes", "containers", "container"),
)


def _merge(runs: list[RunDocument], notes: list[str]) -> RunDocument:
    """One run of every run's cells; a cell in a later run replaces the same cell before (one
    note says how many, and from which runs). Beside a fleet run's cells, a local run's cells take
    its machine's name as their host."""
    cells: list[CellResult] = []
    scenarios: dict[str, dict[str, Any]] = {}
    drivers: dict[str, dict[str, Any]] = {}
    by_key: dict[CellKey, int] = {}
    label_of: dict[CellKey, str] = {}
    shown: Counter[str] = Counter()  # run label -> cells it shows in place of an earlier run's
    involved: dict[str, None] = {}
    fleet = any(c.host for run in runs for c in run.cells)
    for run in runs:
        scenarios.update(run.scenarios)
        drivers.update(run.drivers)
        for cell in run.cells:
            if fleet and not cell.host:  # a local run beside a fleet's: its machine is its host
                cell = dataclasses.replace(cell, host=run.machine.name or run.label)
            key = cell.key
            if key in by_key:
                involved.update(dict.fromkeys((label_of[key], run.label)))
                shown[run.label] += 1
                cells[by_key[key]] = cell
            else:
                by_key[key] = len(cells)
                cells.append(cell)
            label_of[key] = run.label
    if shown:
        labels = ", ".join(involved)
        winners = ", ".join(f"{n} from {label}" for label, n in shown.items())
        notes.append(
            f"{sum(shown.values())} cells are in several of these runs ({labels}); each shows the last run "
            f"given ({winners}). Report one run's file to see that run alone, or compare two with "
            f"`layerbench compare OLD NEW`"
        )
    return dataclasses.replace(runs[0], cells=cells, scenarios=scenarios, drivers=drivers)


def slope_text(slope: float, unit: str, step: str) -> str:
    """`+12.3 µs per layer`, `+48 KiB per container`, `+0.41 ns per file`."""
    scales = {
        "ns": ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1.0, "ns")),
        "bytes": ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "B")),
    }.get(unit, ((1.0, unit),))
    factor, name = next(((f, n) for f, n in scales if abs(slope) >= f), scales[-1])
    return f"{slope / factor:+.3g} {name} per {step}".replace(" count per", " per")


#: a fitted slope is shown only when the line explains this much of the medians' variance
MIN_R2 = 0.9
MIN_FIT_POINTS = 3


def fit_slopes(cells: Sequence[CellResult], rows: Iterable[MetricRow]) -> list[Slope]:
    """A least-squares line (numpy.polyfit, degree 1) through the medians of every SLOPES
    metric against its parameter, per scenario, driver and backing (and per set of the
    other parameters, when they do not just follow the swept one). A line through at
    least MIN_FIT_POINTS values with R² of at least MIN_R2 `fits`; the others are kept
    with `fits` false, so a report can say that no straight line describes them."""
    medians: dict[tuple[str, ...], float] = {(*r.key, r.metric): r.median for r in rows}
    out = []
    for metric, param, step in SLOPES:
        unit = results.unit_of(metric)
        for (scenario, driver, backing, host), points in _slope_points(cells, medians, metric, param).items():
            unique = len({x for x, _, _ in points}) == len(points)
            lines: dict[str, list[tuple[float, float]]] = {}
            for x, rest, med in points:
                lines.setdefault("" if unique else rest, []).append((x, med))
            for rest, pts in lines.items():
                if len({x for x, _ in pts}) < 2:
                    continue
                slope, intercept, r2 = _fit_line(pts)
                fits = len(pts) >= MIN_FIT_POINTS and r2 >= MIN_R2
                text = (
                    slope_text(slope, unit, step)
                    if fits
                    else "too few values to fit"
                    if len(pts) < MIN_FIT_POINTS
                    else "no straight line"
                )
                where = (scenario, driver, backing, host, metric, param, rest, unit)
                out.append(Slope(*where, slope, intercept, r2, len(pts), fits, text))
    return out


def _slope_points(
    cells: Sequence[CellResult], medians: Mapping[tuple[str, ...], float], metric: str, param: str
) -> dict[tuple[str, str, str, str], list[tuple[float, str, float]]]:
    """Per (scenario, driver, backing, host): each cell's value of `param`, its other parameters and the
    median of `metric` (cells without either are left out)."""
    groups: dict[tuple[str, str, str, str], list[tuple[float, str, float]]] = {}
    for cell in cells:
        if param not in cell.params:
            continue
        scenario, driver, backing, params, host = cell.key
        med = medians.get((scenario, driver, backing, params, host, metric))
        if med is None or math.isnan(med):
            continue
        rest = other_params(dict(cell.params), param)
        groups.setdefault((scenario, driver, backing, host), []).append((float(cell.params[param]), rest, med))
    return groups


def _fit_line(pts: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Slope, intercept and R² of the least-squares line through `pts` (x, y)."""
    xs, ys = np.array([x for x, _ in pts]), np.array([y for _, y in pts])
    slope, intercept = (float(v) for v in np.polyfit(xs, ys, 1))
    spread = float(np.sum((ys - ys.mean()) ** 2))
    r2 = 1 - float(np.sum((ys - (slope * xs + intercept)) ** 2)) / spread if spread else 1.0
    return slope, intercept, r2


def build(
    given: Sequence[RunDocument | Mapping[str, Any]], baseline: str = DEFAULT_BASELINE, with_claims: bool = True
) -> Report:
    """The report of one or more runs (results documents read with `results.read`, or runs' models): the
    report merges them into one `RunDocument` (`Report.document`)."""
    if not given:
        raise UserError("no results files given")
    runs = [run_document(d) for d in given]
    notes: list[str] = []
    merged = _merge(runs, notes)
    drivers = _drivers(merged, baseline, notes)
    scenarios = list(dict.fromkeys([*merged.scenarios, *(c.scenario for c in merged.cells)]))
    run = merged.with_cells(
        sorted(
            merged.cells,
            key=lambda c: (scenarios.index(c.scenario), params_key(c.params_text), drivers.index(c.driver), c.host),
        )
    )
    rows = _ratios(metric_rows(run), baseline)
    slopes = fit_slopes(run.cells, rows)
    slopes.sort(key=lambda f: (drivers.index(f.driver) if f.driver in drivers else len(drivers), f.host))
    verdicts = [(host, verdict(part, drivers)) for host, part in run.by_host()]
    return Report(
        runs=[_run_record(r) for r in runs],
        document=run,
        baseline=baseline,
        drivers=drivers,
        rows=rows,
        claims=claims.evaluate(run) if with_claims else None,
        warnings=run_warnings(run),
        notes=notes,
        errors=[f"{c.name()}: {c.status}: {c.error}" for c in run.cells if not c.ok],
        slopes=slopes,
        verdict=verdicts[0][1],
        verdicts=verdicts,
        engine_overheads=engine_overheads(run),
    )


def _drivers(run: RunDocument, baseline: str, notes: list[str]) -> list[str]:
    """The drivers in report order: the baseline first (a note when it did not run), then as they came."""
    drivers = list(dict.fromkeys(c.driver for c in run.cells))
    if baseline in drivers:
        drivers.remove(baseline)
        drivers.insert(0, baseline)
    else:
        notes.append(
            f"baseline driver {baseline} is not in these results, so there are no ratios "
            f"(choose one of {', '.join(drivers) or 'none'} with --baseline)"
        )
    return drivers


def _ratios(rows: list[MetricRow], baseline: str) -> list[MetricRow]:
    """The rows, each with its `ratio` to the baseline's median: the baseline's cell on the same host and
    backing, else its only cell on the host with these parameters (NaN when there is none, or several)."""
    base: dict[tuple[str, ...], list[float]] = {}
    for r in rows:
        if r.driver == baseline:
            base.setdefault((r.scenario, r.params, r.metric, r.host, r.backing), []).append(r.median)
            base.setdefault((r.scenario, r.params, r.metric, r.host), []).append(r.median)
    out = []
    for r in rows:
        found = (
            base.get((r.scenario, r.params, r.metric, r.host, r.backing))
            or base.get((r.scenario, r.params, r.metric, r.host))
            or []
        )
        b = found[0] if len(found) == 1 else None
        out.append(r.with_ratio(r.median / b if b and not math.isnan(b) else float("nan")))
    return out


def _run_record(run: RunDocument) -> RunRecord:
    """One run as the report's machine table shows it."""
    return RunRecord(
        label=run.label,
        started_utc=run.started_utc,
        finished_utc=run.finished_utc,
        status=run.status,
        machine=run.machine,
        tool=run.tool,
        helpers=run.helpers,
        # a fleet run's hosts that ran its cells: their machines, in the machine table
        hosts={h: v for h, v in (run.fleet_hosts or {}).items() if h in run.hosts},
        facts=run_facts(run).removeprefix("run: "),  # quick or full, samples per cell, how stores were made
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def render_csv(report: Report) -> str:
    """The tidy CSV of the merged runs (`results.to_csv`, as `run --export-csv` writes): a row per cell and metric."""
    return results.to_csv(report.doc)


def render_json(report: Report) -> str:
    """The report's data: runs, verdict, rows, slopes, claims, warnings, notes, errors."""
    out = {
        "baseline": report.baseline,
        "runs": [r.to_dict() for r in report.runs],
        "verdict": None if report.verdict is None else verdict_dict(report.verdict),
        "verdicts": [{"host": host, **verdict_dict(v)} for host, v in report.verdicts],
        "rows": [r.to_dict() for r in report.rows],
        "slopes": [f.to_dict() for f in report.slopes],
        "claims": report.claims,
        "warnings": report.warnings,
        "notes": report.notes,
        "errors": report.errors,
    }
    return json.dumps(_jsonable(out), indent=1) + "\n"


def render(report: Report, fmt: str, long: bool = False) -> str:
    """The report in the registered format `fmt` (`layerbench plugins` lists them; `long`: md-long for md)."""
    from layerbench.plugins import default_plugins

    out = io.StringIO()
    default_plugins().exporter("md-long" if long and fmt == "md" else fmt)(report, out)
    return out.getvalue()


def read_all(paths: list[Path]) -> list[dict[str, Any]]:
    """Every results file, read (and migrated) in the order given."""
    return [results.read(p) for p in paths]
