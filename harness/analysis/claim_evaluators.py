"""How a claim is decided: `Claim` (a claim as data) and the three evaluators, `Each`, `Extremes` and
`Faster` (harness/analysis/claims.py holds the claims themselves).

- `Each`: every subject measured (a cell, or one cell per driver) gives a figure, and the
  comparison (`rules`: by the driver's style, `"*"` for any) must hold for each; a claim no
  rule decided is not measured;
- `Extremes`: at each value of a swept parameter, the largest value of each metric belongs to
  a driver of one style (vfs is the slowest and the largest);
- `Faster`: one driver below another at every point both ran (overlay2-rootless against
  fuse-overlayfs).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from layerbench.analysis.results_model import CellResult, RunDocument
from layerbench.units import human

__all__ = [
    "Claim",
    "Each",
    "Evaluator",
    "Extremes",
    "Faster",
    "Select",
    "Rule",
    "Values",
    "Verdict",
    "HELD",
    "NOT_HELD",
    "NOT_MEASURED",
]

HELD, NOT_HELD, NOT_MEASURED = "held", "did not hold", "not measured"
Verdict = tuple[str, str]
#: what a subject measured: named numbers (and lists, text) a figure is written from and a rule reads
Values = dict[str, Any]
Rule = Callable[[Values], bool]


class _Figure(string.Formatter):
    """`{x:bytes}` and `{x:ns}` as people read them (units.human); any other spec as str.format."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec in ("bytes", "ns"):
            return human(value, format_spec)
        return super().format_field(value, format_spec)


def _figure(template: str | Callable[[Values], str], values: Values) -> str:
    return template(values) if callable(template) else _Figure().format(template, **values)


class Evaluator(Protocol):
    def __call__(self, claim: Claim, run: RunDocument) -> Verdict: ...


@dataclass(frozen=True)
class Claim:
    """One claim: `id` (stable: tests and tools pick claims by it), the `statement` reports print, its
    `source`, the `scenario` whose cells decide it (`""`: any cell with the metrics), the `metrics` it
    reads, and the evaluator with the comparison."""

    id: str
    statement: str
    source: str
    scenario: str
    metrics: tuple[str, ...]
    decide: Evaluator

    def __call__(self, run: RunDocument) -> Verdict:
        return self.decide(self, run)


@dataclass(frozen=True)
class Select:
    """Which cells a claim reads: of its scenario, with these parameter values, with samples of every
    metric in `needs`, of drivers of these `styles` (any when empty), in these statuses, and `where`."""

    params: tuple[tuple[str, Any], ...] = ()
    needs: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ("ok",)
    where: Callable[[CellResult], bool] | None = None

    def cells(self, scenario: str, run: RunDocument) -> list[CellResult]:
        return [
            c
            for c in run.cells
            if c.status in self.statuses
            and (not scenario or c.scenario == scenario)
            and all(c.params.get(k) == v for k, v in self.params)
            and all(c.samples(m) for m in self.needs)
            and (not self.styles or run.style(c.driver) in self.styles)
            and (self.where is None or self.where(c))
        ]


def _by_driver(c: CellResult) -> tuple[str, ...]:
    return (c.driver,)


@dataclass(frozen=True)
class Each:
    """Every subject gives a figure and must pass the rule of its driver's style.

    A subject is one cell (`per_driver` None, in `order`), or each driver's cells (`per_driver`
    picks what `values` reads from them: one cell, or the group). `values` gives what the figure
    and the rules read, or None to leave the subject out. `rules` maps a driver style (`"*"`: any
    other) to the comparison; a subject whose style has no rule is shown, not judged. With no
    selected cell the verdict is not measured with `none` (when given); with no subject judged,
    not measured with the figures, else `empty`."""

    select: Select
    values: Callable[[Any, RunDocument], Values | None]
    figure: str | Callable[[Values], str]
    rules: Mapping[str, Rule]
    none: str | None = None
    empty: str = ""
    per_driver: Callable[[list[CellResult]], Any] | None = None
    order: Callable[[CellResult], tuple[str, ...]] = _by_driver
    unique: bool = False  # the same figure once

    def __call__(self, claim: Claim, run: RunDocument) -> Verdict:
        cells = self.select.cells(claim.scenario, run)
        if not cells and self.none is not None:
            return NOT_MEASURED, self.none
        figures: list[str] = []
        decided, ok = False, True
        for driver, subject in self._subjects(cells):
            values = self.values(subject, run)
            if values is None:
                continue
            figures.append(_figure(self.figure, {"driver": driver, **values}))
            rule = self.rules.get(run.style(driver), self.rules.get("*"))
            if rule is not None:
                decided, ok = True, ok and rule(values)
        if self.unique:
            figures = list(dict.fromkeys(figures))
        if not decided:
            return NOT_MEASURED, "; ".join(figures) or self.empty
        return (HELD if ok else NOT_HELD), "; ".join(figures)

    def _subjects(self, cells: list[CellResult]) -> list[tuple[str, Any]]:
        if self.per_driver is None:
            return [(c.driver, c) for c in sorted(cells, key=self.order)]
        drivers = sorted({c.driver for c in cells})
        return [(d, self.per_driver([c for c in cells if c.driver == d])) for d in drivers]


@dataclass(frozen=True)
class Extremes:
    """At each value of `across`, the largest median of each of `metrics` ((name, metric, unit)) is a
    driver of style `worst`; not measured unless drivers of `worst` and of `against` both ran."""

    across: str
    metrics: tuple[tuple[str, str, str], ...]
    worst: str
    against: tuple[str, ...]
    none: str

    def __call__(self, claim: Claim, run: RunDocument) -> Verdict:
        cells = run.ok(claim.scenario)
        drivers = {c.driver for c in cells}
        worst = [d for d in drivers if run.style(d) == self.worst]
        if not worst or not [d for d in drivers if run.style(d) in self.against]:
            return NOT_MEASURED, self.none
        ok, figures = True, []
        swept: set[Any] = {c.params.get(self.across) for c in cells}
        for n in sorted(swept):
            at = {c.driver: c for c in cells if c.params.get(self.across) == n}
            parts = [f"{n} {self.across}:"]
            for name, metric, unit in self.metrics:
                value = {d: c.median(metric) or 0 for d, c in at.items()}
                top = max(value, key=value.__getitem__)
                ok &= top in worst
                parts.append(f"{name} {top} ({human(value[top], unit)})")
            figures.append(parts[0] + " " + ", ".join(parts[1:]))
        return (HELD if ok else NOT_HELD), "; ".join(figures)


@dataclass(frozen=True)
class Faster:
    """`fast` below `slow` at every point both ran: each (scenario, metric, parameters) of `points`, a
    point per parameter set both drivers ran (on the shallowest `shallowest` when given)."""

    fast: str
    slow: str
    points: tuple[tuple[str, str, tuple[tuple[str, Any], ...], str | None], ...]
    none: str

    def __call__(self, claim: Claim, run: RunDocument) -> Verdict:
        pairs: list[tuple[str, float, float]] = []  # (what, fast's median, slow's median)
        missing = set()
        for scenario, metric, params, shallowest in self.points:
            at: dict[tuple[tuple[str, Any], ...], dict[str, float]] = {}
            for c in run.ok(scenario, **dict(params)):
                if c.driver in (self.fast, self.slow) and (m := c.median(metric)) is not None:
                    at.setdefault(tuple(sorted(c.params.items())), {})[c.driver] = m
            common = sorted((k, v) for k, v in at.items() if len(v) == 2)
            if shallowest and common:
                top = min(dict(k).get(shallowest, 1) for k, _ in common)
                common = [(k, v) for k, v in common if dict(k).get(shallowest, 1) == top]
            if not common:
                missing.add(scenario)
            pairs += [
                (f"{scenario} ({', '.join(f'{k}={v}' for k, v in key)})", v[self.fast], v[self.slow])
                for key, v in common
            ]
        if missing:
            return NOT_MEASURED, self.none
        figures = [f"{what}: {self.fast} {human(a, 'ns')}, {self.slow} {human(b, 'ns')}" for what, a, b in pairs]
        return (HELD if all(a < b for _, a, b in pairs) else NOT_HELD), "; ".join(figures)
