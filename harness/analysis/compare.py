"""Compare two runs: which metrics got better or worse, significantly and beyond a ratio, on which machines.

Cells pair by scenario content hash, driver, backing, parameters and host; a scenario
whose file changed between the runs is refused, since its numbers measure something
else. Each run's environment (kernel, CPU, layerbench commit, settings) heads the
output, with a warning for what differs. A metric changes only when both hold:

- significant: Mann-Whitney U (two-sided) on the raw samples when both sides have at
  least 5, its p-values corrected for the many comparisons by Benjamini-Hochberg
  (false discovery rate 0.05) within each family of one scenario's metric (every
  driver, backing and parameter set of it); else the two 95% bootstrap CIs of the
  median do not overlap;
- beyond the threshold (the effect size): new/old median above 1 + threshold or below
  1 / (1 + threshold).

The whole machine moved when every driver's timings shift together: each driver's
geometric-mean ratio of its `_ns` medians is beyond the threshold, all in the same
direction. Then timings are judged after dividing the new samples by the overall
geometric-mean shift, so only what moved beyond the machine counts.

Lower is better for `_ns` and `_bytes` metrics; a change in any other metric is
`changed`, neither better nor worse.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerbench.analysis import results
from layerbench.analysis.stats import bootstrap_ci
from layerbench.errors import UserError
from layerbench.units import human, params_human

__all__ = [
    "Change",
    "Comparison",
    "compare",
    "compare_runs",
    "format_changes",
    "format_text",
    "format_md",
    "format_json",
    "significant",
    "environment",
    "benjamini_hochberg",
    "MIN_MWU_SAMPLES",
    "ALPHA",
    "FORMATS",
]

MIN_MWU_SAMPLES = 5
ALPHA = 0.05
VERDICTS = ("worse", "better", "changed", "unchanged")
FORMATS = ("text", "md", "json")
MAX_NOTES = 5  # cells in one run only: listed up to this many, else counted


@dataclass(frozen=True)
class Change:
    """One metric of one paired cell: old and new medians, their ratio and the verdict.

    `ratio` is new/old; `judged` the ratio the verdict used (divided by the machine's
    shift when the whole machine moved); `p` the Mann-Whitney p-value (None with few
    samples) and `p_adjusted` its Benjamini-Hochberg value."""

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
    test: str  # "mann-whitney p=0.008 (BH 0.02)" or "ci overlap" / "ci apart"
    verdict: str  # one of VERDICTS
    judged: float = 1.0
    p: float | None = None
    p_adjusted: float | None = None
    host: str = ""  # the fleet host both cells ran on ("" outside a fleet run)


@dataclass
class Comparison:
    """Everything compare found: the changes, notes, each run's environment and what differs,
    each driver's geometric-mean shift of its timings, and whether the whole machine moved."""

    changes: list[Change]
    notes: list[str]
    threshold: float
    environments: tuple[dict[str, str], dict[str, str]]
    differences: list[str]
    shifts: dict[str, float]
    overall: float
    machine_moved: bool


def environment(doc: dict[str, Any]) -> dict[str, str]:
    """What a run's numbers depend on besides the drivers: kernel, CPU, commit, Python, settings."""
    m, tool, settings = doc.get("machine") or {}, doc.get("tool") or {}, doc.get("settings") or {}
    keys = ("quick", "cold", "samples", "warmup", "min_time_s", "order")
    return {
        "run": f"{doc.get('label')} ({doc.get('started_utc')})",
        "host": str(m.get("name")),
        "kernel": str(m.get("kernel")),
        "cpu": f"{m.get('cpu')} × {m.get('cpus')}",
        "layerbench": f"{tool.get('version')} ({str(tool.get('git_commit') or 'no git')[:12]})",
        "python": str(m.get("python")),
        "settings": ", ".join(f"{k}={settings[k]}" for k in keys if settings.get(k) not in (None, False)) or "defaults",
    }


def significant(old: list[float], new: list[float]) -> tuple[bool, str]:
    """Is the difference between the two sample sets significant (uncorrected), and by which test."""
    p = _p_value(old, new)
    if p is not None:
        return p < ALPHA, f"mann-whitney p={p:.2g}"
    (lo_a, hi_a), (lo_b, hi_b) = bootstrap_ci(old), bootstrap_ci(new)
    apart = hi_a < lo_b or hi_b < lo_a
    return apart, "ci apart" if apart else "ci overlap"


def _p_value(old: list[float], new: list[float]) -> float | None:
    if len(old) < MIN_MWU_SAMPLES or len(new) < MIN_MWU_SAMPLES:
        return None
    if sorted(old) == sorted(new):
        return 1.0
    from scipy.stats import mannwhitneyu  # here: importing scipy.stats costs every CLI command a second

    return float(mannwhitneyu(old, new, alternative="two-sided").pvalue)


def benjamini_hochberg(pvalues: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the order given."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        adjusted[i] = min(running, 1.0)
    return adjusted


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


def _geomean(ratios: list[float]) -> float:
    good = [r for r in ratios if 0 < r < math.inf]
    return float(math.exp(sum(map(math.log, good)) / len(good))) if good else 1.0


def compare_runs(old: dict[str, Any], new: dict[str, Any], threshold: float = 0.10) -> Comparison:
    """Every metric of every paired cell, judged as the module docstring says, with the environments."""
    if threshold < 0:
        raise UserError(f"--threshold {threshold}: must be 0 or more")
    for name in sorted(set(old["scenarios"]) & set(new["scenarios"])):
        a, b = old["scenarios"][name]["sha256"], new["scenarios"][name]["sha256"]
        if a != b:
            raise UserError(
                f"scenario {name!r} changed between the runs (sha256 {a[:12]} -> {b[:12]}); "
                "its results measure different things and are not compared"
            )
    a_cells, b_cells = _cells(old), _cells(new)
    notes = []
    for side, mine, other in (("old", a_cells, b_cells), ("new", b_cells, a_cells)):
        alone = [" ".join(k for k in key if k) for key in mine if key not in other]
        if len(alone) > MAX_NOTES:
            notes.append(f"{len(alone)} cells only in the {side} run, e.g. {'; '.join(alone[:MAX_NOTES])}")
        else:
            notes += [f"only in {side}: {cell}" for cell in alone]
    pairs = []
    for key in (k for k in b_cells if k in a_cells):
        a_metrics, b_metrics = a_cells[key]["metrics"], b_cells[key]["metrics"]
        for metric in (m for m in b_metrics if m in a_metrics):
            xs, ys = a_metrics[metric]["samples"], b_metrics[metric]["samples"]
            if xs and ys:
                pairs.append((key, metric, b_metrics[metric]["unit"], [float(x) for x in xs], [float(y) for y in ys]))
    if not pairs:
        raise UserError("nothing to compare: no cell and metric of the old run pairs with one of the new run")
    medians = [(float(np.median(xs)), float(np.median(ys))) for *_, xs, ys in pairs]
    timing = [i for i, (_, metric, *_) in enumerate(pairs) if metric.endswith("_ns")]
    by_driver: dict[str, list[float]] = {}
    for i in timing:
        by_driver.setdefault(pairs[i][0][1], []).append(_ratio(*medians[i]))
    shifts = {d: _geomean(r) for d, r in by_driver.items()}
    overall = _geomean([_ratio(*medians[i]) for i in timing])
    factor = 1 + threshold
    moved = len(shifts) >= 2 and (
        all(s > factor for s in shifts.values()) or all(s < 1 / factor for s in shifts.values())
    )
    scale = overall if moved else 1.0
    judged_samples = [ys if not metric.endswith("_ns") else [y / scale for y in ys] for _, metric, _, _, ys in pairs]
    pvalues = [_p_value(xs, ys) for (*_, xs, _), ys in zip(pairs, judged_samples, strict=True)]
    adjusted: dict[int, float] = {}
    families: dict[tuple[str, str], list[int]] = {}  # one family per scenario and metric
    for i, p in enumerate(pvalues):
        if p is not None:
            families.setdefault((pairs[i][0][0], pairs[i][1]), []).append(i)
    for members in families.values():
        adjusted.update(zip(members, benjamini_hochberg([pvalues[i] or 0.0 for i in members]), strict=True))
    changes = []
    for i, ((key, metric, unit, xs, _), ys) in enumerate(zip(pairs, judged_samples, strict=True)):
        m_old, m_new = medians[i]
        ratio = _ratio(m_old, m_new)
        judged = ratio / scale if metric.endswith("_ns") else ratio
        p = pvalues[i]
        if p is not None:
            is_sig, test = adjusted[i] < ALPHA, f"mann-whitney p={p:.2g} (BH {adjusted[i]:.2g})"
        else:
            is_sig, test = significant(xs, ys)
        scenario, driver, backing, params, host = key
        changes.append(
            Change(
                scenario,
                driver,
                backing,
                params,
                metric=metric,
                unit=unit,
                old=m_old,
                new=m_new,
                ratio=ratio,
                significant=is_sig,
                test=test,
                verdict=_verdict(metric, judged, is_sig, threshold),
                judged=judged,
                p=p,
                p_adjusted=adjusted.get(i),
                host=host,
            )
        )
    envs = environment(old), environment(new)
    differences = [
        f"{k}: {envs[0][k]} -> {envs[1][k]}" for k in envs[0] if k not in ("run",) and envs[0][k] != envs[1][k]
    ]
    return Comparison(changes, notes, threshold, envs, differences, shifts, overall, moved)


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float = 0.10) -> tuple[list[Change], list[str]]:
    """Every metric of every paired cell, and notes on what could not be paired (compare_runs, shorter)."""
    found = compare_runs(old, new, threshold)
    return found.changes, found.notes


def _rule(threshold: float) -> str:
    return (
        f"threshold {threshold:.0%}, significance: Mann-Whitney U with >= {MIN_MWU_SAMPLES} samples a side, "
        f"Benjamini-Hochberg FDR {ALPHA} per scenario and metric, else 95% CI"
    )


def _summary(comp: Comparison) -> str:
    counts = {v: sum(c.verdict == v for c in comp.changes) for v in VERDICTS}
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v] or v == "unchanged")
    head = "no change" if counts["unchanged"] == len(comp.changes) else "changed"
    return f"{head}: {summary} (of {len(comp.changes)} metrics; {_rule(comp.threshold)})"


def _context(comp: Comparison) -> list[str]:
    """The environment of both runs, what differs, and each driver's shift: plain lines."""
    old, new = comp.environments
    width = max(map(len, old), default=0)
    lines = [f"{k:<{width}}  " + (old[k] if old[k] == new[k] else f"old: {old[k]}  new: {new[k]}") for k in old]
    if comp.differences:
        lines.append(
            "warning: the runs differ in "
            + "; ".join(comp.differences)
            + " — a shift may come from the machine, not the drivers"
        )
    if comp.shifts:
        lines.append(
            "timing shift per driver (geometric mean of new/old medians): "
            + ", ".join(f"{d} ×{s:.2f}" for d, s in sorted(comp.shifts.items()))
        )
    if comp.machine_moved:
        lines.append(
            f"the whole machine moved: every driver's timings shifted the same way (×{comp.overall:.2f} "
            "overall); timings are judged after dividing by that, so the shift is not a regression"
        )
    return lines


def _shown(comp: Comparison, show_all: bool) -> list[Change]:
    shown = [c for c in comp.changes if show_all or c.verdict != "unchanged"]
    return sorted(
        shown, key=lambda c: (VERDICTS.index(c.verdict), c.scenario, c.driver, c.host, c.backing, c.params, c.metric)
    )


MARKS = {"worse": "+", "better": "-", "changed": "~", "unchanged": " "}


def _row(c: Change) -> list[str]:
    return [
        MARKS[c.verdict],
        f"{c.ratio:.2f}",
        f"{c.judged:.2f}",
        human(c.old, c.unit),
        human(c.new, c.unit),
        c.scenario,
        c.driver + (f" @ {c.host}" if c.host else ""),
        c.backing or "-",
        params_human(c.params),
        c.metric,
        c.test,
    ]


HEADER = ["", "ratio", "judged", "old", "new", "scenario", "driver", "backing", "params", "metric", "test"]


def format_text(comp: Comparison, show_all: bool = False) -> str:
    """The environments, a table of the metrics that changed (every metric with `show_all`), a summary."""
    lines = [*_context(comp), ""]
    body = [_row(c) for c in _shown(comp, show_all)]
    if body:
        widths = [max(len(r[i]) for r in (HEADER, *body)) for i in range(len(HEADER))]

        def fmt(r: list[str]) -> str:
            return "  ".join(
                v.rjust(w) if 1 <= i <= 4 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()

        lines += [fmt(HEADER), *map(fmt, body), ""]
    lines += [f"note: {n}" for n in comp.notes]
    lines.append(_summary(comp))
    return "\n".join(lines) + "\n"


def format_md(comp: Comparison, show_all: bool = False) -> str:
    """The same as Markdown, for a CI comment: environments side by side, warnings, the changed metrics."""
    old, new = comp.environments
    out = ["## layerbench compare", "", f"**{_summary(comp)}**", "", "| | old | new |", "| --- | --- | --- |"]
    out += [f"| {k} | {old[k]} | {new[k]}{' ⚠' if old[k] != new[k] and k != 'run' else ''} |" for k in old]
    out.append("")
    out += [f"> {line}" for line in _context(comp)[len(old) :]] + [""]
    shown = _shown(comp, show_all)
    if shown:
        out += ["| " + " | ".join([*HEADER[1:], "verdict"]) + " |", "|" + " --- |" * len(HEADER)]
        out += ["| " + " | ".join([*_row(c)[1:], c.verdict]).replace("|", "\\|") + " |" for c in shown]
        out.append("")
    out += [f"- note: {n}" for n in comp.notes]
    return "\n".join(out).rstrip() + "\n"


def format_json(comp: Comparison, show_all: bool = True) -> str:
    """Everything as JSON: environments, differences, shifts, machine_moved, summary and every change."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    out = {
        "summary": _summary(comp),
        "threshold": comp.threshold,
        "old": comp.environments[0],
        "new": comp.environments[1],
        "differences": comp.differences,
        "shifts": comp.shifts,
        "overall_shift": comp.overall,
        "machine_moved": comp.machine_moved,
        "notes": comp.notes,
        "changes": [{k: clean(v) for k, v in c.__dict__.items()} for c in _shown(comp, show_all)],
    }
    return json.dumps(out, indent=1) + "\n"


def format_changes(changes: list[Change], notes: list[str], threshold: float, show_all: bool = False) -> str:
    """A table of the metrics that changed and a one-line summary (no environments: see format_text)."""
    comp = Comparison(changes, notes, threshold, ({}, {}), [], {}, 1.0, False)
    return format_text(comp, show_all).lstrip("\n")
