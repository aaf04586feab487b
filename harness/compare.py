"""Compare two runs: which metrics got better or worse, significantly and beyond a ratio.

Cells pair by scenario content hash, driver and parameters; a scenario whose file
changed between the runs is refused, since its numbers measure something else. A
metric changes only when both hold:

- significant: Mann-Whitney U (two-sided, alpha 0.05) on the raw samples when both
  sides have at least 5, else the two 95% bootstrap CIs of the median do not overlap;
- beyond the threshold: new/old median above 1 + threshold or below 1 / (1 + threshold).

Lower is better for `_ns` and `_bytes` metrics; a change in any other metric is
`changed`, neither better nor worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from . import results
from .errors import UserError
from .stats import bootstrap_ci
from .table import human

__all__ = ["Change", "compare", "format_changes", "significant", "MIN_MWU_SAMPLES", "ALPHA"]

MIN_MWU_SAMPLES = 5
ALPHA = 0.05
VERDICTS = ("worse", "better", "changed", "unchanged")


@dataclass(frozen=True)
class Change:
    """One metric of one paired cell: old and new medians, their ratio and the verdict."""

    scenario: str
    driver: str
    backing: str
    params: str
    metric: str
    unit: str
    old: float
    new: float
    ratio: float
    significant: bool
    test: str  # "mann-whitney p=0.008" or "ci overlap" / "ci apart"
    verdict: str  # one of VERDICTS


def significant(old: list[float], new: list[float]) -> tuple[bool, str]:
    """Is the difference between the two sample sets significant, and by which test."""
    if len(old) >= MIN_MWU_SAMPLES and len(new) >= MIN_MWU_SAMPLES:
        if sorted(old) == sorted(new):
            return False, "mann-whitney p=1"
        p = float(mannwhitneyu(old, new, alternative="two-sided").pvalue)
        return p < ALPHA, f"mann-whitney p={p:.2g}"
    (lo_a, hi_a), (lo_b, hi_b) = bootstrap_ci(old), bootstrap_ci(new)
    apart = hi_a < lo_b or hi_b < lo_a
    return apart, "ci apart" if apart else "ci overlap"


def _ratio(old: float, new: float) -> float:
    if old == new:
        return 1.0
    return new / old if old else math.inf


def _verdict(metric: str, ratio: float, is_significant: bool, threshold: float) -> str:
    factor = 1 + threshold
    if not is_significant or (1 / factor <= ratio <= factor):
        return "unchanged"
    if not metric.endswith(("_ns", "_bytes")):
        return "changed"
    return "worse" if ratio > factor else "better"


def _cells(doc: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The ok cells by scenario, driver, backing, parameters and host (results.cell_key)."""
    return {results.cell_key(cell): cell for cell in doc["cells"] if cell["status"] == "ok"}


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float = 0.10) -> tuple[list[Change], list[str]]:
    """Every metric of every paired cell, and notes on what could not be paired."""
    if threshold < 0:
        raise UserError(f"--threshold {threshold}: must be 0 or more")
    for name in sorted(set(old["scenarios"]) & set(new["scenarios"])):
        a, b = old["scenarios"][name]["sha256"], new["scenarios"][name]["sha256"]
        if a != b:
            raise UserError(f"scenario {name!r} changed between the runs (sha256 {a[:12]} -> {b[:12]}); "
                            "its results measure different things and are not compared")
    a_cells, b_cells = _cells(old), _cells(new)
    notes = [f"only in {side}: {' '.join(k for k in key if k)}"
             for side, mine, other in (("old", a_cells, b_cells), ("new", b_cells, a_cells))
             for key in mine if key not in other]
    changes = []
    for key in (k for k in b_cells if k in a_cells):
        a_metrics, b_metrics = a_cells[key]["metrics"], b_cells[key]["metrics"]
        for metric in (m for m in b_metrics if m in a_metrics):
            xs, ys = a_metrics[metric]["samples"], b_metrics[metric]["samples"]
            if not xs or not ys:
                continue
            m_old, m_new = float(np.median(xs)), float(np.median(ys))
            ratio = _ratio(m_old, m_new)
            is_sig, test = significant(xs, ys)
            changes.append(Change(*key[:4], metric=metric, unit=b_metrics[metric]["unit"], old=m_old, new=m_new,
                                  ratio=ratio, significant=is_sig, test=test,
                                  verdict=_verdict(metric, ratio, is_sig, threshold)))
    if not changes:
        raise UserError("nothing to compare: no cell and metric of the old run pairs with one of the new run")
    return changes, notes


def format_changes(changes: list[Change], notes: list[str], threshold: float, show_all: bool = False) -> str:
    """A table of the metrics that changed (every metric with `show_all`) and a one-line summary."""
    shown = [c for c in changes if show_all or c.verdict != "unchanged"]
    shown.sort(key=lambda c: (VERDICTS.index(c.verdict), c.scenario, c.driver, c.params, c.metric))
    header = ["", "ratio", "old", "new", "scenario", "driver", "params", "metric", "test"]
    marks = {"worse": "+", "better": "-", "changed": "~", "unchanged": " "}
    body = [[marks[c.verdict], f"{c.ratio:.2f}", human(c.old, c.unit), human(c.new, c.unit), c.scenario, c.driver,
             c.params or "-", c.metric, c.test] for c in shown]
    lines = []
    if body:
        widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
        fmt = lambda r: "  ".join(v.rjust(w) if 1 <= i <= 3 else v.ljust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(r, widths))).rstrip()
        lines += [fmt(header), *map(fmt, body), ""]
    counts = {v: sum(c.verdict == v for c in changes) for v in VERDICTS}
    lines += [f"note: {n}" for n in notes]
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v] or v == "unchanged")
    head = "no change" if counts["unchanged"] == len(changes) else "changed"
    lines.append(f"{head}: {summary} (of {len(changes)} metrics; threshold {threshold:.0%}, "
                 f"significance: Mann-Whitney U p<{ALPHA} with >= {MIN_MWU_SAMPLES} samples a side, else 95% CI)")
    return "\n".join(lines) + "\n"
