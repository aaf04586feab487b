"""The report's rows, typed: a `MetricRow` per cell and metric (its summary statistics and its ratio to the
baseline driver), a `Slope` per line fitted through a swept parameter's medians.

Both are built from the typed results model (`CellResult`, `RunDocument`) and read by attribute by the
renderers; `to_dict` is a row as the JSON report writes it (the field order is the JSON's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from layerbench.analysis.results_model import CellKey, CellResult, Metric, RunDocument
from layerbench.analysis.stats import summarize

__all__ = ["MetricRow", "Slope", "metric_rows"]


class _Record:
    """Read by key as well as by attribute: an exporter plugin written when rows were dicts (`row["median"]`,
    `row.get("host")`, `dict(row)`) keeps working."""

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self.keys() else default

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class MetricRow(_Record):
    """One cell's metric, summarised (analysis/stats.py `summarize`), and its `ratio` to the baseline's
    median (NaN when there is none). `params` is the cell's `k=v;k=v`; backing and host are `""` when none."""

    scenario: str
    driver: str
    backing: str
    host: str
    params: str
    metric: str
    unit: str
    n: int
    median: float
    p25: float
    p75: float
    min: float
    max: float
    iqr: float
    p90: float
    p99: float
    ci95_low: float
    ci95_high: float
    outliers_mad: int
    outliers_tukey: int
    ratio: float = math.nan

    @classmethod
    def of(cls, cell: CellResult, metric: str, data: Metric) -> MetricRow:
        """The row of `cell`'s `metric` (no ratio yet)."""
        s = summarize(data.samples)
        return cls(
            *(cell.scenario, cell.driver, cell.backing, cell.host, cell.params_text, metric, data.unit),
            n=int(s["n"]),
            median=s["median"],
            p25=s["p25"],
            p75=s["p75"],
            min=s["min"],
            max=s["max"],
            iqr=s["iqr"],
            p90=s["p90"],
            p99=s["p99"],
            ci95_low=s["ci95_low"],
            ci95_high=s["ci95_high"],
            outliers_mad=int(s["outliers_mad"]),
            outliers_tukey=int(s["outliers_tukey"]),
        )

    @property
    def key(self) -> CellKey:
        """The row's cell."""
        return CellKey(self.scenario, self.driver, self.backing, self.params, self.host)

    def with_ratio(self, ratio: float) -> MetricRow:
        return dataclasses.replace(self, ratio=ratio)

    def to_dict(self) -> dict[str, Any]:
        """The row as the JSON report writes it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Slope(_Record):
    """A least-squares line through the medians of `metric` against the swept `param`, for one scenario,
    driver, backing and host (and set of the other parameters, `rest`, `""` when they just follow `param`).
    `fits`: through enough values with a high enough R² to be shown; `text` says the slope, or why not."""

    scenario: str
    driver: str
    backing: str
    host: str
    metric: str
    param: str
    rest: str
    unit: str
    slope: float
    intercept: float
    r2: float
    points: int
    fits: bool
    text: str

    def to_dict(self) -> dict[str, Any]:
        """The slope as the JSON report writes it."""
        return dataclasses.asdict(self)


def metric_rows(runs: RunDocument | Iterable[CellResult]) -> list[MetricRow]:
    """One row per cell and metric, in the cells' order (no ratios yet)."""
    cells = runs.cells if isinstance(runs, RunDocument) else runs
    return [MetricRow.of(cell, metric, data) for cell in cells for metric, data in cell.metrics.items()]
