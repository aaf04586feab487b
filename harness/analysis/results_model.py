"""The typed results model: a run as `RunDocument`, each of its cells as `CellResult`.

The JSON document on disk (docs/results.md, harness/analysis/results.schema.json) is what a
run stores; this is how code reads it. `run_document` is the one builder: it takes the JSON
document as `results.read` returns it, a runner's document as it grows, or a test's partial
one, and `RunDocument.to_dict` gives the JSON back. What tells cells apart (`CellKey`), a
metric's median, a cell's name in a message, a cell's host and backing (`""` when none) and
the slicing of a run by host or by backing each live here once.

The model is a view: it keeps each cell's JSON record (`CellResult.record`) for the fields a
scenario adds (`outcomes`, `images`, `image_layers_disk_bytes`, ...), read with `get`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from layerbench.units import params_human

__all__ = [
    "CellKey",
    "Metric",
    "CellResult",
    "RunDocument",
    "run_document",
    "cell_result",
    "cell_key",
    "median",
    "params_text",
]


def params_text(params: Mapping[str, Any]) -> str:
    """`k=v;k=v`, sorted by name: a cell's parameters as one string (its key, the CSV's `params`)."""
    return ";".join(f"{k}={params[k]}" for k in sorted(params))


def median(samples: Iterable[float]) -> float | None:
    """The median of `samples` as a float (the mean of the two middle ones for an even count); None for none.
    Every headline value (claims, the verdict, compare, engine overheads) is this."""
    values = list(samples)
    return float(statistics.median(values)) if values else None


class CellKey(NamedTuple):
    """What tells one cell from another: scenario, driver, backing, parameters (`k=v;k=v`) and host,
    in this order; backing and host are `""` when a cell has none (a fleet's cell has a host)."""

    scenario: str
    driver: str
    backing: str
    params: str
    host: str

    @classmethod
    def of(
        cls, scenario: str, driver: str, backing: str | None, params: Mapping[str, Any], host: str | None = None
    ) -> CellKey:
        """The key of a cell from its parts (a planned cell, or one read from a file)."""
        return cls(scenario, driver, backing or "", params_text(params), host or "")

    def any_host(self) -> CellKey:
        """The same cell on whichever host (a cell planned for any host of a fleet)."""
        return self._replace(host="")

    def name(self, human: bool = False, host: bool = True, params_first: bool = False) -> str:
        """The cell in a message, the one way to name one: `copy-up overlay2 on ext4 @ host-a (file_size=4096)`;
        parameters as people write them with `human` (`file_size=4 KiB`); no `@ host` without `host` (a run with
        one host); `params_first`: `copy-up overlay2 file_size=4096 on ext4 @ host-a` (the failed-cells line)."""
        params = params_human(self.params) if human else self.params
        where = (f" on {self.backing}" if self.backing else "") + (f" @ {self.host}" if host and self.host else "")
        if params_first:
            return f"{self.scenario} {self.driver}" + (f" {params}" if params else "") + where
        return f"{self.scenario} {self.driver}{where}" + (f" ({params})" if params else "")


def cell_key(cell: Mapping[str, Any]) -> CellKey:
    """The key of a cell's JSON record (`CellKey`)."""
    return CellKey.of(cell["scenario"], cell["driver"], cell.get("backing"), cell["params"], cell.get("host"))


@dataclass(frozen=True)
class Metric:
    """One metric of a cell: its unit and raw samples, in the order taken."""

    unit: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float | None:
        return median(self.samples)


@dataclass(frozen=True, eq=False)
class CellResult:
    """One cell of a run: its key fields, status, metrics, and its JSON record for everything else."""

    scenario: str
    driver: str
    params: Mapping[str, Any]
    backing: str
    host: str
    status: str
    error: str | None
    metrics: Mapping[str, Metric]
    record: Mapping[str, Any]

    @classmethod
    def from_dict(cls, cell: Mapping[str, Any]) -> CellResult:
        """A cell from its JSON record (missing backing and host read as `""`; missing status as ok)."""
        return cls(
            scenario=cell["scenario"],
            driver=cell["driver"],
            params=cell.get("params") or {},
            backing=cell.get("backing") or "",
            host=cell.get("host") or "",
            status=cell.get("status", "ok"),
            error=cell.get("error"),
            metrics={
                name: Metric(data.get("unit", ""), tuple(data.get("samples") or ()))
                for name, data in (cell.get("metrics") or {}).items()
            },
            record=cell,
        )

    @property
    def key(self) -> CellKey:
        return CellKey(self.scenario, self.driver, self.backing, self.params_text, self.host)

    @property
    def params_text(self) -> str:
        return params_text(self.params)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def series(self) -> tuple[str, str]:
        """(driver, backing): a column of the verdict, a line of a plot."""
        return self.driver, self.backing

    def samples(self, metric: str) -> list[float]:
        """The raw samples of `metric` as floats (empty when the cell did not measure it)."""
        found = self.metrics.get(metric)
        return [float(x) for x in found.samples] if found else []

    def median(self, metric: str) -> float | None:
        """The median of `metric` (None when the cell did not measure it)."""
        found = self.metrics.get(metric)
        return found.median if found else None

    def get(self, field: str, default: Any = None) -> Any:
        """A field of the cell's JSON record that the model does not name (`outcomes`, `image_bytes`, ...)."""
        return self.record.get(field, default)

    @property
    def outcomes(self) -> Mapping[str, Mapping[str, int]]:
        """Labelled outcome counts (`{"stat": {"ENOENT": 3}}`), empty when none."""
        found: Mapping[str, Mapping[str, int]] = self.record.get("outcomes") or {}
        return found

    def name(self, human: bool = False, host: bool = True, params_first: bool = False) -> str:
        """The cell in a message (CellKey.name)."""
        return self.key.name(human, host, params_first)


@dataclass(frozen=True, eq=False)
class RunDocument:
    """One run (or several merged): its cells and its JSON document for the run-level fields."""

    cells: tuple[CellResult, ...]
    record: Mapping[str, Any]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RunDocument:
        return cls(tuple(CellResult.from_dict(c) for c in doc.get("cells") or ()), doc)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of these cells (a slice's document holds the slice's cells)."""
        return {**self.record, "cells": [dict(c.record) for c in self.cells]}

    def with_cells(self, cells: Iterable[CellResult]) -> RunDocument:
        """The same run with only `cells` (a slice)."""
        return RunDocument(tuple(cells), self.record)

    @property
    def label(self) -> str:
        return str(self.record.get("label") or "")

    @property
    def drivers(self) -> Mapping[str, Mapping[str, Any]]:
        """Each driver's record (`style`, `version`, ...)."""
        found: Mapping[str, Mapping[str, Any]] = self.record.get("drivers") or {}
        return found

    @property
    def scenarios(self) -> Mapping[str, Mapping[str, Any]]:
        found: Mapping[str, Mapping[str, Any]] = self.record.get("scenarios") or {}
        return found

    @property
    def settings(self) -> Mapping[str, Any]:
        found: Mapping[str, Any] = self.record.get("settings") or {}
        return found

    def style(self, driver: str) -> str:
        """A driver's style (union, snapshot, copy, ...), `""` when the document does not say."""
        return str(self.drivers.get(driver, {}).get("style", ""))

    def ok(self, scenario: str | None = None, **params: Any) -> list[CellResult]:
        """The ok cells (of `scenario`, with these parameter values when given)."""
        return [
            c
            for c in self.cells
            if c.ok
            and (scenario is None or c.scenario == scenario)
            and all(c.params.get(k) == v for k, v in params.items())
        ]

    @property
    def hosts(self) -> list[str]:
        """Every cell's host by name (`""` for cells without one)."""
        return sorted({c.host for c in self.cells})

    @property
    def several_hosts(self) -> bool:
        """Did the cells run on more than one host (a fleet run)?"""
        return len(self.hosts) > 1

    @property
    def swept_backings(self) -> bool:
        """Does some driver run on more than one backing filesystem (a backing sweep)?"""
        return any(len(b) > 1 for b in self._backings().values())

    def _backings(self) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for cell in self.cells:
            seen.setdefault(cell.driver, set()).add(cell.backing)
        return seen

    def by_host(self) -> list[tuple[str, RunDocument]]:
        """The run once per host of a fleet run with several hosts (by name), else once whole (host `""`)."""
        hosts = self.hosts
        if len(hosts) < 2:
            return [("", self)]
        return [(h, self.with_cells(c for c in self.cells if c.host == h)) for h in hosts]

    def by_backing(self) -> list[tuple[str, RunDocument]]:
        """The run once per backing filesystem of a backing sweep, else once whole (backing `""`).

        In a sweep (a driver ran on several backings), each part holds that backing's cells
        and the cells of drivers that ran on one backing only, so nothing is compared across
        filesystems and nothing measured is left out.
        """
        seen = self._backings()
        swept = sorted({b for backings in seen.values() if len(backings) > 1 for b in backings})
        if not swept:
            return [("", self)]
        return [
            (b, self.with_cells(c for c in self.cells if c.backing == b or len(seen[c.driver]) == 1)) for b in swept
        ]


def run_document(doc: RunDocument | Mapping[str, Any]) -> RunDocument:
    """The builder: a `RunDocument` of a JSON results document (one given is returned as it is)."""
    return doc if isinstance(doc, RunDocument) else RunDocument.from_dict(doc)


def cell_result(cell: CellResult | Mapping[str, Any]) -> CellResult:
    """A `CellResult` of a cell's JSON record (one given is returned as it is)."""
    return cell if isinstance(cell, CellResult) else CellResult.from_dict(cell)
