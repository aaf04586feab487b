"""Compare runs: which metrics got better or worse, beyond the noise between runs, on which machines.

Cells pair by scenario, driver, backing, parameters and host; a scenario whose file changed
between the runs is left out (its numbers measure something else) and named in a note, and
the others are compared. Each side may be one results file or several runs of the same code
(`run --repeat N`, or several files per side). Each run's environment (kernel, CPU,
layerbench commit, settings) heads the output, with a warning for what differs.

Most of the spread between two runs of the same code is *between* runs, not within one:
two back-to-back default runs here put a timing's median up to 2x apart while each run's
own samples agree closely (docs/reports.md, "The regression gate"). So a metric changes
only when the effect is beyond the threshold (new/old median above 1 + threshold or below
1 / (1 + threshold)) and the evidence counts runs, not samples:

- several runs on either side: a t-test (pooled variance) on the log of each run's median,
  Benjamini-Hochberg corrected (false discovery rate 0.05) within each family of one
  scenario's metric;
- one run a side: Mann-Whitney U on the raw samples (at least 5 a side, else the 95%
  bootstrap CIs of the medians apart), Benjamini-Hochberg corrected the same way, and for a
  timing also beyond the between-run noise floor: the largest ratio this scenario's metric
  showed on this driver between A/A pairs given with `--noise OLD NEW` (runs of the same code
  on this machine), else ×`DEFAULT_FLOOR`. A timing significant within its runs but inside
  the floor is `noise`, not `worse`, unless its driver's timings moved together: the
  driver's geometric-mean shift beyond the threshold, and a Wilcoxon signed-rank test of its
  metrics' log ratios (at least `MIN_DRIVER_METRICS`) significant, while the other drivers
  did not move with it. Then every timing of that driver that moved the same way is judged
  with it.

The whole machine moved when every driver's timings shift together: each driver's
geometric-mean ratio of its `_ns` medians is beyond the threshold, all in the same
direction. Then timings are judged after dividing the new samples by the overall
geometric-mean shift, so only what moved beyond the machine counts.

Lower is better for `_ns` and `_bytes` metrics; a change in any other metric is
`changed`, neither better nor worse. Sizes and counts get no floor: the kernel's own
accounting varies little between runs (at most 5% between the reference A/A pair).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerbench.analysis.results_model import CellKey, CellResult, RunDocument, median, run_document
from layerbench.analysis.stats import bootstrap_ci
from layerbench.errors import UserError
from layerbench.units import human, params_human

__all__ = [
    "Change",
    "Comparison",
    "compare",
    "compare_runs",
    "noise_floors",
    "format_changes",
    "format_text",
    "format_md",
    "format_json",
    "significant",
    "environment",
    "benjamini_hochberg",
    "MIN_MWU_SAMPLES",
    "MIN_DRIVER_METRICS",
    "DEFAULT_FLOOR",
    "ALPHA",
    "FORMATS",
    "VERDICTS",
]

MIN_MWU_SAMPLES = 5
#: a driver's timings moved together only when at least this many of its metrics say so
MIN_DRIVER_METRICS = 6
#: one run a side, no A/A pairs given: a timing must move beyond this factor (the largest A/A ratio
#: of the reference pair here was x2.01; docs/reports.md, "The regression gate")
DEFAULT_FLOOR = 3.0
ALPHA = 0.05
#: the smallest ratio that counts as a change (`--threshold`); the verdict's ties are differences below it
THRESHOLD = 0.10
VERDICTS = ("worse", "better", "changed", "noise", "unchanged")
FORMATS = ("text", "md", "json")
MAX_NOTES = 5  # cells in one run only: listed up to this many, else counted

Doc = RunDocument | Mapping[str, Any]
Side = Doc | Sequence[Doc]
Key = CellKey
Family = tuple[str, str, str]  # scenario, driver, metric: what a noise floor is learned for


@dataclass(frozen=True)
class Change:
    """One metric of one paired cell: old and new medians, their ratio and the verdict.

    `ratio` is new/old; `judged` the ratio the verdict used (divided by the machine's
    shift when the whole machine moved); `p` the p-value of the test (Mann-Whitney on the
    samples with one run a side, a t-test on the run medians with several; None with few
    samples) and `p_adjusted` its Benjamini-Hochberg value; `floor` the between-run noise
    floor a timing had to pass with one run a side (1.0 when none applied)."""

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
    test: str  # "mann-whitney p=0.008 (BH 0.02)", "t-test of 3+3 run medians p=...", "ci overlap" / "ci apart"
    verdict: str  # one of VERDICTS
    judged: float = 1.0
    p: float | None = None
    p_adjusted: float | None = None
    host: str = ""  # the fleet host both cells ran on ("" outside a fleet run)
    floor: float = 1.0


@dataclass
class Comparison:
    """Everything compare found: the changes, notes, each side's environment (its first run) and what
    differs, each driver's geometric-mean shift of its timings, whether the whole machine moved, the
    drivers whose timings moved together (driver -> shift), how many runs each side had, and the
    scenarios left out because they changed."""

    changes: list[Change]
    notes: list[str]
    threshold: float
    environments: tuple[dict[str, str], dict[str, str]]
    differences: list[str]
    shifts: dict[str, float]
    overall: float
    machine_moved: bool
    driver_moved: dict[str, float] = field(default_factory=dict)
    runs: tuple[int, int] = (1, 1)
    changed_scenarios: list[str] = field(default_factory=list)
    learned: bool = False  # noise floors learned from A/A pairs (--noise)


def environment(doc: Doc) -> dict[str, str]:
    """What a run's numbers depend on besides the drivers: kernel, CPU, commit, Python, settings."""
    run = run_document(doc)
    m, tool, settings = run.machine, run.tool, run.settings or {}
    keys = ("quick", "cold", "samples", "warmup", "min_time_s", "order")
    return {
        "run": f"{run.label} ({run.started_utc})",
        "host": str(m.name),
        "kernel": str(m.kernel),
        "cpu": f"{m.cpu} × {m.cpus}",
        "layerbench": f"{tool.version} ({str(tool.git_commit or 'no git')[:12]})",
        "python": str(m.python),
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


def _t_test(old: list[float], new: list[float]) -> float | None:
    """Two-sided p of Student's t-test with pooled variance on the run medians (logs when all are
    positive); one run on one side is allowed, as long as there are three runs in all."""
    if len(old) + len(new) < 3:
        return None
    a, b = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    if (a > 0).all() and (b > 0).all():
        a, b = np.log(a), np.log(b)
    df = a.size + b.size - 2
    pooled = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / df
    diff = float(b.mean() - a.mean())
    if pooled == 0:
        return 1.0 if diff == 0 else 0.0
    from scipy.stats import t as student_t

    stat = diff / math.sqrt(pooled * (1 / a.size + 1 / b.size))
    return float(2 * student_t.sf(abs(stat), df))


def _signed_rank(logs: list[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test that the log ratios centre on 0."""
    nonzero = [v for v in logs if v != 0]
    if not nonzero:
        return 1.0
    if len(set(nonzero)) == 1 and len(nonzero) == len(logs):  # every metric moved by exactly one factor
        return 2 * 0.5 ** len(nonzero)
    from scipy.stats import wilcoxon

    return float(wilcoxon(logs, zero_method="wilcox").pvalue)


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


def _beyond(ratio: float, factor: float) -> bool:
    """Is `ratio` above `factor` or below 1/`factor` (a ratio equal to either, to rounding, is not)?"""
    if not 0 < ratio < math.inf:
        return ratio != 1
    return abs(math.log(ratio)) > math.log(factor) + 1e-9


def _direction(metric: str, ratio: float) -> str:
    if not metric.endswith(("_ns", "_bytes")):
        return "changed"
    return "worse" if ratio > 1 else "better"


def _docs(side: Side) -> list[RunDocument]:
    sides = [side] if isinstance(side, (Mapping, RunDocument)) else list(side)
    return [run_document(d) for d in sides]


def _cells(doc: RunDocument, skip: set[str]) -> dict[Key, CellResult]:
    """The ok cells by their CellKey."""
    return {cell.key: cell for cell in doc.ok() if cell.scenario not in skip}


def _geomean(ratios: list[float]) -> float:
    good = [r for r in ratios if 0 < r < math.inf]
    return float(math.exp(sum(map(math.log, good)) / len(good))) if good else 1.0


def _changed_scenarios(docs: list[RunDocument]) -> dict[str, list[str]]:
    """Scenarios whose file differs between any two of the runs: name -> its hashes, in run order."""
    hashes: dict[str, list[str]] = {}
    for doc in docs:
        for name, info in doc.scenarios.items():
            sha = str(info.get("sha256"))
            if sha not in hashes.setdefault(name, []):
                hashes[name].append(sha)
    return {name: shas for name, shas in sorted(hashes.items()) if len(shas) > 1}


def _medians(doc: RunDocument, skip: set[str]) -> dict[tuple[Key, str], float]:
    return {
        (key, metric): value
        for key, cell in _cells(doc, skip).items()
        for metric, data in cell.metrics.items()
        if (value := data.median) is not None
    }


def noise_floors(pairs: Sequence[tuple[Doc, Doc]]) -> dict[Family, float]:
    """The between-run noise floor of each scenario's metric on each driver, from A/A pairs (two runs of
    the same code on one machine): the largest new/old or old/new ratio of medians any of its cells showed."""
    floors: dict[Family, float] = {}
    for a, b in ((run_document(a), run_document(b)) for a, b in pairs):
        skip = set(_changed_scenarios([a, b]))
        ma, mb = _medians(a, skip), _medians(b, skip)
        for (key, metric), x in ma.items():
            y = mb.get((key, metric))
            if y is None or not metric.endswith("_ns"):
                continue
            r = _ratio(x, y)
            if 0 < r < math.inf:
                family = (key.scenario, key.driver, metric)
                floors[family] = max(floors.get(family, 1.0), r, 1 / r)
    return floors


@dataclass
class _Pair:
    key: Key
    metric: str
    unit: str
    old_runs: list[list[float]]
    new_runs: list[list[float]]

    @property
    def xs(self) -> list[float]:
        return [x for run in self.old_runs for x in run]

    @property
    def ys(self) -> list[float]:
        return [y for run in self.new_runs for y in run]


def _pairs(olds: list[RunDocument], news: list[RunDocument], skip: set[str]) -> tuple[list[_Pair], list[str]]:
    """Every cell and metric both sides measured (each run's samples kept apart), and notes on the cells
    only one side has."""
    a_runs, b_runs = [_cells(d, skip) for d in olds], [_cells(d, skip) for d in news]
    a_keys = {k for cells in a_runs for k in cells}
    b_keys = {k for cells in b_runs for k in cells}
    notes = []
    for side, mine, other in (("old", a_keys, b_keys), ("new", b_keys, a_keys)):
        alone = [key.name() for key in sorted(mine - other)]
        if len(alone) > MAX_NOTES:
            notes.append(f"{len(alone)} cells only in the {side} run, e.g. {'; '.join(alone[:MAX_NOTES])}")
        else:
            notes += [f"only in {side}: {cell}" for cell in alone]
    pairs = []
    for key in sorted(a_keys & b_keys):
        a_cells = [cells[key] for cells in a_runs if key in cells]
        b_cells = [cells[key] for cells in b_runs if key in cells]
        for metric, data in b_cells[0].metrics.items():
            xs = [r for c in a_cells if (r := c.samples(metric))]
            ys = [r for c in b_cells if (r := c.samples(metric))]
            if xs and ys:
                pairs.append(_Pair(key, metric, data.unit, xs, ys))
    return pairs, notes


def compare_runs(
    old: Side, new: Side, threshold: float = THRESHOLD, noise: Sequence[tuple[Doc, Doc]] = ()
) -> Comparison:
    """Every metric of every paired cell, judged as the module docstring says, with the environments.

    `old` and `new` are one results document each, or several runs of the same code each; `noise` are
    A/A pairs of this machine whose spread sets each timing's noise floor (one run a side)."""
    if threshold < 0:
        raise UserError(f"--threshold {threshold}: must be 0 or more")
    olds, news = _docs(old), _docs(new)
    if not olds or not news:
        raise UserError("nothing to compare: each side needs at least one results file")
    changed = _changed_scenarios(olds + news)
    pairs, notes = _pairs(olds, news, set(changed))
    if changed:
        notes.insert(
            0,
            "scenarios changed between the runs, their results measure different things and are not compared: "
            + "; ".join(f"{name} (sha256 {' -> '.join(s[:12] for s in shas)})" for name, shas in changed.items()),
        )
    if not pairs:
        raise UserError(
            "nothing to compare: no cell and metric of the old run pairs with one of the new run"
            + (f" (changed scenarios left out: {', '.join(changed)})" if changed else "")
        )
    judging = _judging(pairs, 1 + threshold, len(olds) > 1 or len(news) > 1, noise_floors(noise))
    changes = _judge_all(pairs, judging)
    envs, differences = _environments(olds, news)
    return Comparison(
        changes,
        notes,
        threshold,
        envs,
        differences,
        judging.shifts,
        judging.overall,
        judging.moved,
        judging.driver_moved,
        (len(olds), len(news)),
        list(changed),
        bool(judging.floors),
    )


@dataclass
class _Judging:
    """What every pair is judged with: each pair's medians and its ratio after the machine's shift, each
    driver's shift, the overall shift, whether the whole machine moved (`scale`: what the new timings are
    divided by then, else 1.0), the drivers whose timings moved together, the noise floors."""

    factor: float
    several: bool
    floors: dict[Family, float]
    medians: list[tuple[float, float]]
    shifts: dict[str, float]
    overall: float
    moved: bool
    scale: float
    judged: list[float]
    driver_moved: dict[str, float]

    def new_runs(self, p: _Pair) -> list[list[float]]:
        """The new side's runs as judged: timings divided by the machine's shift."""
        return [[y / self.scale for y in run] for run in p.new_runs] if p.metric.endswith("_ns") else p.new_runs


def _judging(pairs: list[_Pair], factor: float, several: bool, floors: dict[Family, float]) -> _Judging:
    """The shifts of the machine and of each driver (the module docstring says how each is decided)."""
    medians = [(_median(p.xs), _median(p.ys)) for p in pairs]
    timing = [i for i, p in enumerate(pairs) if p.metric.endswith("_ns")]
    by_driver: dict[str, list[float]] = {}
    for i in timing:
        by_driver.setdefault(pairs[i].key.driver, []).append(_ratio(*medians[i]))
    shifts = {d: _geomean(r) for d, r in by_driver.items()}
    overall = _geomean([_ratio(*medians[i]) for i in timing])
    moved = len(shifts) >= 2 and (
        all(s > factor for s in shifts.values()) or all(s < 1 / factor for s in shifts.values())
    )
    scale = overall if moved else 1.0
    judged = [
        _ratio(m_old, m_new) / (scale if p.metric.endswith("_ns") else 1.0)
        for p, (m_old, m_new) in zip(pairs, medians, strict=True)
    ]
    driver_moved: dict[str, float] = {}
    for driver in by_driver:
        logs = [math.log(judged[i]) for i in timing if pairs[i].key.driver == driver and 0 < judged[i] < math.inf]
        shift = math.exp(sum(logs) / len(logs)) if logs else 1.0
        if len(logs) >= MIN_DRIVER_METRICS and _beyond(shift, factor) and _signed_rank(logs) < ALPHA:
            driver_moved[driver] = shift
    if len(driver_moved) == len(by_driver) >= 2:  # every driver moved: that is the machine, judged above
        driver_moved = {}
    return _Judging(factor, several, floors, medians, shifts, overall, moved, scale, judged, driver_moved)


def _median(samples: list[float]) -> float:
    found = median(samples)
    assert found is not None  # a pair has samples on both sides
    return found


def _p_values(pairs: list[_Pair], judging: _Judging) -> tuple[list[float | None], dict[int, float]]:
    """Each pair's p-value (a t-test of the run medians with several runs a side, else Mann-Whitney U on the
    samples; None with too few) and its Benjamini-Hochberg value within its scenario's metric."""
    pvalues: list[float | None] = []
    for p in pairs:
        if judging.several:
            pvalues.append(_t_test([_median(r) for r in p.old_runs], [_median(r) for r in judging.new_runs(p)]))
        else:
            pvalues.append(_p_value(p.xs, [y for run in judging.new_runs(p) for y in run]))
    adjusted: dict[int, float] = {}
    families: dict[tuple[str, str], list[int]] = {}  # one family per scenario and metric
    for i, pv in enumerate(pvalues):
        if pv is not None:
            families.setdefault((pairs[i].key.scenario, pairs[i].metric), []).append(i)
    for members in families.values():
        adjusted.update(zip(members, benjamini_hochberg([pvalues[i] or 0.0 for i in members]), strict=True))
    return pvalues, adjusted


def _judge_all(pairs: list[_Pair], judging: _Judging) -> list[Change]:
    """Every pair's Change: significant and beyond the threshold (and, for a timing with one run a side, beyond
    its noise floor, else `noise`), or moved with its driver's timings."""
    pvalues, adjusted = _p_values(pairs, judging)
    several, factor = judging.several, judging.factor
    changes = []
    for i, p in enumerate(pairs):
        (m_old, m_new), judged, pv = judging.medians[i], judging.judged[i], pvalues[i]
        if pv is not None:
            what = f"t-test of {len(p.old_runs)}+{len(p.new_runs)} run medians" if several else "mann-whitney"
            is_sig, test = adjusted[i] < ALPHA, f"{what} p={pv:.2g} (BH {adjusted[i]:.2g})"
        else:
            is_sig, test = significant(p.xs, [y for run in judging.new_runs(p) for y in run])
            if several:
                test += f" ({len(p.old_runs)}+{len(p.new_runs)} runs)"
        scenario, driver, backing, params, host = p.key
        timing = p.metric.endswith("_ns")
        floor = 1.0 if several or not timing else judging.floors.get((scenario, driver, p.metric), DEFAULT_FLOOR)
        moved_by = judging.driver_moved.get(driver) if timing else None
        with_driver = moved_by is not None and _beyond(judged, factor) and (moved_by > 1) == (judged > 1)
        verdict = "unchanged"
        if with_driver:  # the evidence is the driver's metrics together, not this metric's own samples
            verdict = _direction(p.metric, judged)
            test += f"; {driver}'s timings moved together (×{moved_by:.2f})"
        elif is_sig and _beyond(judged, factor):
            verdict = _direction(p.metric, judged) if _beyond(judged, floor) else "noise"
        changes.append(
            Change(
                scenario,
                driver,
                backing,
                params,
                metric=p.metric,
                unit=p.unit,
                old=m_old,
                new=m_new,
                ratio=_ratio(m_old, m_new),
                significant=is_sig,
                test=test,
                verdict=verdict,
                judged=judged,
                p=pv,
                p_adjusted=adjusted.get(i),
                host=host,
                floor=floor,
            )
        )
    return changes


def _environments(
    olds: list[RunDocument], news: list[RunDocument]
) -> tuple[tuple[dict[str, str], dict[str, str]], list[str]]:
    """Each side's environment (its first run's, with how many more runs) and what differs between them."""
    envs = environment(olds[0]), environment(news[0])
    for env, docs in zip(envs, (olds, news), strict=True):
        if len(docs) > 1:
            env["run"] += f" and {len(docs) - 1} more run{'s' * (len(docs) > 2)}"
    differences = [
        f"{k}: {envs[0][k]} -> {envs[1][k]}" for k in envs[0] if k not in ("run",) and envs[0][k] != envs[1][k]
    ]
    return envs, differences


def compare(
    old: Side, new: Side, threshold: float = 0.10, noise: Sequence[tuple[Doc, Doc]] = ()
) -> tuple[list[Change], list[str]]:
    """Every metric of every paired cell, and notes on what could not be paired (compare_runs, shorter)."""
    found = compare_runs(old, new, threshold, noise)
    return found.changes, found.notes


def _rule(comp: Comparison) -> str:
    if comp.runs != (1, 1):
        test = f"t-test of the {comp.runs[0]}+{comp.runs[1]} runs' medians"
    else:
        floor = "learned from A/A pairs" if comp.learned else f"×{DEFAULT_FLOOR:g}"
        test = (
            f"Mann-Whitney U with >= {MIN_MWU_SAMPLES} samples a side, else 95% CI, and timings beyond the "
            f"between-run noise floor ({floor}) or moved with their driver's"
        )
    return (
        f"threshold {comp.threshold:.0%}, significance: {test}, Benjamini-Hochberg FDR {ALPHA} per scenario and metric"
    )


def _summary(comp: Comparison) -> str:
    counts = {v: sum(c.verdict == v for c in comp.changes) for v in VERDICTS}
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v] or v == "unchanged")
    head = "no change" if counts["unchanged"] + counts["noise"] == len(comp.changes) else "changed"
    return f"{head}: {summary} (of {len(comp.changes)} metrics; {_rule(comp)})"


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
    for driver, shift in sorted(comp.driver_moved.items()):
        lines.append(
            f"{driver}'s timings moved together (×{shift:.2f}, signed-rank test over its metrics): each of its "
            "timings that moved the same way beyond the threshold is judged with it"
        )
    noise = sum(c.verdict == "noise" for c in comp.changes)
    if noise:
        lines.append(
            f"noise: {noise} timing{'s' * (noise > 1)} moved significantly within each run's samples but inside the "
            "noise between runs (--all lists them); to judge those, compare several runs a side "
            "(`run --repeat 3`) or give this machine's A/A pairs (`--noise OLD NEW`)"
        )
    if comp.machine_moved:
        lines.append(
            f"the whole machine moved: every driver's timings shifted the same way (×{comp.overall:.2f} "
            "overall); timings are judged after dividing by that, so the shift is not a regression"
        )
    return lines


def _shown(comp: Comparison, show_all: bool, hide: tuple[str, ...] = ("unchanged", "noise")) -> list[Change]:
    shown = [c for c in comp.changes if show_all or c.verdict not in hide]
    return sorted(
        shown, key=lambda c: (VERDICTS.index(c.verdict), c.scenario, c.driver, c.host, c.backing, c.params, c.metric)
    )


MARKS = {"worse": "+", "better": "-", "changed": "~", "noise": "?", "unchanged": " "}


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
        out += ["| " + " | ".join(v.replace("|", "\\|") for v in [*_row(c)[1:], c.verdict]) + " |" for c in shown]
        out.append("")
    out += [f"- note: {n}" for n in comp.notes]
    return "\n".join(out).rstrip() + "\n"


def format_json(comp: Comparison, show_all: bool = True) -> str:
    """Everything as JSON: environments, differences, shifts, machine_moved, driver_moved, summary and every
    change."""

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
        "driver_moved": comp.driver_moved,
        "runs": list(comp.runs),
        "changed_scenarios": comp.changed_scenarios,
        "notes": comp.notes,
        "changes": [{k: clean(v) for k, v in c.__dict__.items()} for c in _shown(comp, show_all, ("unchanged",))],
    }
    return json.dumps(out, indent=1) + "\n"


def format_changes(changes: list[Change], notes: list[str], threshold: float, show_all: bool = False) -> str:
    """A table of the metrics that changed and a one-line summary (no environments: see format_text)."""
    comp = Comparison(changes, notes, threshold, ({}, {}), [], {}, 1.0, False)
    return format_text(comp, show_all).lstrip("\n")
