"""The report model: what a report shows, independent of its format (`build` in report/__init__.py
makes one; the exporters, plots and the verdict read it). Its rows and slopes are typed (report/rows.py)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from layerbench.analysis.results_model import CellKey, Machine, RunDocument, Tool
from layerbench.report.engines import EngineOverhead
from layerbench.report.rows import MetricRow, Slope, _Record
from layerbench.report.verdict import Verdict

__all__ = ["Report", "RunRecord", "row_key"]


@dataclass(frozen=True)
class RunRecord(_Record):
    """One run as the report's machine table shows it (`Report.runs`; the JSON report's `runs`): its label,
    times and status, `machine` and `tool` (the results model's records), `helpers` (tool -> version), `hosts`
    (a fleet run's hosts that ran its cells: their records, by name) and `facts` (quick or full, samples per
    cell, how stores were made). Read by key too (`run["label"]`, `run.get("facts")`), as the dict it was."""

    label: str
    started_utc: str
    finished_utc: str | None
    status: str
    machine: Machine
    tool: Tool
    helpers: dict[str, Any] | None
    hosts: dict[str, dict[str, Any]]
    facts: str

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON report writes it."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"machine": self.machine.to_dict(), "tool": self.tool.to_dict()}


@dataclass
class Report:
    """Everything a report shows. `document`: the merged run; `rows`: one per cell and metric, with `ratio` to
    the baseline; `slopes`: the lines fitted through swept parameters."""

    runs: list[RunRecord]
    document: RunDocument
    baseline: str
    drivers: list[str]
    rows: list[MetricRow]
    claims: list[dict[str, str]] | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    slopes: list[Slope] = field(default_factory=list)
    verdict: Verdict | None = None  # drivers against the measures people choose by (the first host's)
    #: (host, Verdict) per host of a fleet run with several hosts, else one ("", verdict)
    verdicts: list[tuple[str, Verdict]] = field(default_factory=list)
    #: an engine driver's time beside its mechanism's, where both ran
    engine_overheads: list[EngineOverhead] = field(default_factory=list)

    @functools.cached_property
    def doc(self) -> dict[str, Any]:
        """The merged run as its JSON results document (docs/results.md), for exporters that write or read
        JSON (the tidy CSV, a plugin's format)."""
        return self.document.to_dict()

    def samples(
        self, scenario: str, driver: str, params: str, metric: str, backing: str | None = None, host: str | None = None
    ) -> list[float]:
        """The raw samples of one cell's metric (empty when it was not measured); any backing or host unless given."""
        for cell in self.document.cells:
            if (
                (cell.scenario, cell.driver, cell.params_text) == (scenario, driver, params)
                and backing in (None, cell.backing)
                and host in (None, cell.host)
            ):
                found = cell.metrics.get(metric)
                return list(found.samples) if found else []
        return []

    @property
    def swept_backings(self) -> bool:
        """Does some driver run on more than one backing filesystem (a backing sweep)?"""
        return self.document.swept_backings

    @property
    def hosts(self) -> list[str]:
        """The hosts of a fleet run with several hosts, by name; empty otherwise."""
        return self.document.hosts if self.document.several_hosts else []

    def series(self) -> list[tuple[str, str, str]]:
        """Every (driver, backing, host) with cells: drivers in report order, then hosts by name, backings in
        run order."""
        keys = dict.fromkeys((c.driver, c.backing, c.host) for c in self.document.cells)
        rank = self.drivers
        return sorted(keys, key=lambda k: (rank.index(k[0]) if k[0] in rank else len(rank), k[2]))

    def label(self, driver: str, backing: str, host: str = "") -> str:
        """How a column or a line is named: the driver, `on <backing>` in a backing sweep, `@ <host>` in a fleet
        run with several hosts."""
        name = f"{driver} on {backing}" if self.swept_backings and backing else driver
        return f"{name} @ {host}" if host and self.hosts else name


def row_key(row: MetricRow) -> CellKey:
    """A report row's cell: its `CellKey` (`MetricRow.key`)."""
    return row.key
