"""The verdict: drivers against the measures people choose a driver by, and which driver for what.

`verdict(doc)` picks one cell per measure and driver (and backing, in a backing sweep)
from a results document: the same parameters for every driver, the extreme value of a
swept parameter where the measure says so (`"max"`: the largest value every driver
ran). Each value gets its ratio to the best in words ("best", "1.9x", "2,100x
slower"); lower is better for every measure. The advice sentences follow the rules
in docs/reports.md, "The verdict", from those numbers only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from layerbench.analysis.compare import THRESHOLD, significant
from layerbench.analysis.results_model import CellResult, RunDocument, cell_result, run_document
from layerbench.report.params import REPEAT_PARAMS
from layerbench.units import human, times_text

__all__ = [
    "Measure",
    "MEASURES",
    "Verdict",
    "VerdictCell",
    "verdict",
    "verdict_table",
    "verdict_text",
    "verdict_dict",
    "per_container_bytes",
    "series",
    "AVOID_FACTOR",
]

#: a driver this many times the best on startup and on disk per container is one to avoid
AVOID_FACTOR = 10.0


@dataclass(frozen=True)
class Measure:
    """One row of the matrix: a metric of a scenario at chosen parameters (a value, "min", "max", or a
    tuple of preferred values: the first every driver ran, else the one most drivers ran)."""

    key: str
    title: str  # with {param} placeholders filled from the chosen parameters
    scenario: str
    metric: str
    select: tuple[tuple[str, Any], ...] = ()
    worse: str = "slower"


#: the cold-start rows' preferences: the python image over a 100 Mbit/s link through crun where those cells ran,
#: else what did run (the title names it)
_COLD_START = (
    ("recipe", ("python", "nginx", "busybox-httpd", "busybox")),
    ("link", ("100mbit",)),
    ("runtime", ("crun",)),
)

MEASURES: tuple[Measure, ...] = (
    Measure(
        "cold_start",
        "cold start to ready ({recipe}, {link}, {runtime})",
        "cold-start",
        "cold_start_ns",
        _COLD_START,
    ),
    Measure(
        "warm_start",
        "warm start to ready ({recipe}, {runtime}; cells at {link})",
        "cold-start",
        "warm_start_ns",
        _COLD_START,
    ),
    Measure(
        "startup",
        "startup ({layers} layers, {files} files)",
        "startup",
        "startup_ns",
        (("layers", "max"), ("files", "min")),
    ),
    Measure(
        "disk",
        "disk per extra container ({containers} containers)",
        "layer-sharing",
        "disk_bytes",
        (("containers", "max"),),
        "larger",
    ),
    Measure(
        "copy_up_small",
        "copy-up of a {file_size} file",
        "copy-up",
        "copy_up_ns",
        (("file_size", "min"), ("mode", "append"), ("depth", 1)),
    ),
    Measure(
        "copy_up_big",
        "copy-up of a {file_size} file",
        "copy-up",
        "copy_up_ns",
        (("file_size", "max"), ("mode", "append"), ("depth", 1)),
    ),
    Measure("commit", "commit of a container", "commit", "commit_ns"),
    Measure("build", "build of a {layers}-layer image", "image-build", "build_ns", (("layers", "max"),)),
    Measure("deep_read", "cold read through {depth} layers", "deep-read", "read_cold_ns", (("depth", "max"),)),
    Measure(
        "memory",
        "page cache per further container ({containers} containers)",
        "page-cache-sharing",
        "page_cache_per_container_bytes",
        (("containers", "max"),),
        "larger",
    ),
)

#: where each row of the avoid rule is measured, to say what is missing
AVOID_ROWS = {
    "startup": ("to start", "the startup time (scenario startup)"),
    "disk": ("per container", "the disk per container (scenario layer-sharing)"),
}


@dataclass
class VerdictCell:
    """One driver's value of one measure: `text` is the value and its ratio to the best in words. `best` also
    marks a tie (`tied`): a timing this run cannot tell from the best (`_tied`)."""

    value: float
    ratio: float
    best: bool
    text: str
    tied: bool = False


@dataclass
class Verdict:
    """Rows of measures (key, title, one cell per column) by columns of drivers (`columns`:
    (driver, backing), `labels`: their names); `rename`: whether renaming an image directory works."""

    columns: list[tuple[str, str]]
    labels: list[str]
    rows: list[tuple[str, str, list[VerdictCell | None]]] = field(default_factory=list)
    rename: dict[tuple[str, str], str] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)
    #: an engine driver's time beside its mechanism's for the verdict's operations (report/engines.py)
    engine: list[str] = field(default_factory=list)


class _Default(dict[str, str]):
    """Marks a title's placeholder of a parameter the cells do not have with `?`, to be cut out."""

    def __missing__(self, key: str) -> str:
        return "?"


def per_container_bytes(cell: CellResult | Mapping[str, Any], metric: str = "disk_bytes") -> float | None:
    """What each container adds: (metric - image_disk_bytes) / containers, the claims' definition
    (harness/analysis/claims.py, layer sharing). A `*_per_container_bytes` metric is that already (its median);
    any other metric is divided by the containers."""
    cell = cell_result(cell)
    value, n = cell.median(metric), cell.params.get("containers") or 1
    if value is None or metric.endswith("_per_container_bytes"):
        return value
    if metric != "disk_bytes":
        return value / n
    image = cell.median("image_disk_bytes")
    return None if image is None else max(value - image, 0.0) / n


def _param_text(name: str, value: Any) -> str:
    if name.endswith("size") and isinstance(value, int):
        return human(float(value), "bytes").replace(".0 ", " ")
    if name == "link" and isinstance(value, str) and (m := re.fullmatch(r"(\d+)([kmg])bit", value)):
        return f"{m[1]} {m[2].upper()}bit/s"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _preferred(cells: list[CellResult], name: str, order: tuple[Any, ...]) -> Any:
    """The first value of `order` that two drivers ran (the one driver, if only one ran any), else the
    value most drivers ran; None when no cell has the parameter. Drivers without it show n/a."""
    ran: dict[Any, set[tuple[str, str]]] = {}
    for c in cells:
        if name in c.params:
            ran.setdefault(c.params[name], set()).add(c.series)
    if not ran:
        return None
    enough = min(2, len(set.union(*ran.values())))
    ranked = sorted(ran, key=lambda v: (order.index(v) if v in order else len(order), str(v)))
    return next((v for v in order if len(ran.get(v, ())) >= enough), max(ranked, key=lambda v: len(ran[v])))


def _choose(cells: list[CellResult], measure: Measure) -> dict[str, Any] | None:
    """The parameter values of the measure: fixed ones, the extreme every driver ran, or the preferred one."""
    chosen: dict[str, Any] = {}
    for name, want in measure.select:
        if isinstance(want, tuple):
            value = _preferred(cells, name, want)
            if value is not None:
                chosen[name] = value
                cells = [c for c in cells if c.params.get(name) == value]  # the next choice among these
        elif want in ("min", "max"):
            per_series: dict[tuple[str, str], set[Any]] = {}
            for c in cells:
                if name in c.params:
                    per_series.setdefault(c.series, set()).add(c.params[name])
            if not per_series:  # no cell sweeps it: nothing to choose
                continue
            common = set.intersection(*per_series.values())
            if not common:
                return None
            chosen[name] = max(common) if want == "max" else min(common)
        else:
            chosen[name] = want
    return chosen


def series(doc: RunDocument | Mapping[str, Any], order: list[str] | None = None) -> list[tuple[str, str]]:
    """Every (driver, backing) with ok cells, drivers in `order` (else as they come)."""
    pairs = list(dict.fromkeys(c.series for c in run_document(doc).ok()))
    rank = order or list(dict.fromkeys(d for d, _ in pairs))
    return sorted(pairs, key=lambda p: rank.index(p[0]) if p[0] in rank else len(rank))


def _rename(doc: RunDocument, key: tuple[str, str]) -> str | None:
    """`yes (253 µs)`, `no: EXDEV`, or None when metadata-storm did not run."""
    for c in doc.ok("metadata-storm"):
        if c.series != key:
            continue
        failed = sorted({e for label, o in c.outcomes.items() if "rename" in label for e in o})
        if failed:
            return "no: " + ", ".join(failed)
        t = c.median("rename_dir_ns")
        return f"yes ({human(t, 'ns')})" if t is not None else None
    return None


def verdict(doc: RunDocument | Mapping[str, Any], order: list[str] | None = None) -> Verdict:
    """The matrix of drivers against MEASURES (rows with no value anywhere are left out) and the advice."""
    run = run_document(doc)
    columns = series(run, order)
    swept = len({d for d, _ in columns}) < len(columns)
    out = Verdict(columns=columns, labels=[f"{d} on {b}" if swept and b else d for d, b in columns])
    for measure in MEASURES:
        row = _measure_row(run, columns, measure)
        if row is not None:
            out.rows.append(row)
    out.rename = {k: text for k in columns if (text := _rename(run, k)) is not None}
    out.advice = _advice(out)
    out.engine = _engine_lines(run)
    return out


def _measure_row(
    run: RunDocument, columns: list[tuple[str, str]], measure: Measure
) -> tuple[str, str, list[VerdictCell | None]] | None:
    """One row of the matrix: the measure's key, its title at the chosen parameters, a cell per column
    (None where that column has no value); None when no column has one."""
    cells = [c for c in run.ok(measure.scenario) if measure.metric in c.metrics]
    chosen = _choose(cells, measure)
    if chosen is None:
        return None
    values: list[float | None] = []
    timings: list[list[float] | None] = []  # a timing's samples: ties (`_tied`)
    for key in columns:
        mine = [
            c for c in cells if c.series == key and all(c.params.get(k, v) == v for k, v in chosen.items())
        ]  # absent: the default
        value = None
        if mine:
            value = (
                per_container_bytes(mine[0], measure.metric)
                if "containers" in chosen
                else mine[0].median(measure.metric)
            )
        values.append(value)
        timed = mine and value is not None and "containers" not in chosen
        timings.append(mine[0].samples(measure.metric) if timed else None)
    present = [v for v in values if v is not None]
    if not present:
        return None
    best = min(present)
    tied = _tied(values, timings, best)
    unit = "bytes" if measure.metric.endswith("_bytes") else "ns"
    row: list[VerdictCell | None] = []
    for v, tie in zip(values, tied, strict=True):
        if v is None:
            row.append(None)
            continue
        ratio = v / best if best > 0 else (1.0 if v == best else math.inf)
        is_best = ratio <= 1.005
        than = "best" if is_best else times_text(ratio, measure.worse) if ratio < math.inf else f"+{human(v, unit)}"
        if tie and not is_best:
            than = f"tied, {than}"
        row.append(VerdictCell(v, ratio, is_best or tie, f"{human(v, unit)} ({than})", tie and not is_best))
    shown = {k: _param_text(k, v) for k, v in chosen.items() if k not in REPEAT_PARAMS}
    title = re.sub(r" \(\)", "", re.sub(r",? ?\?[^,)]*", "", measure.title.format_map(_Default(shown))))
    return measure.key, title, row


def _tied(values: list[float | None], timings: list[list[float] | None], best: float) -> list[bool]:
    """Which values this run cannot tell from the best: less than the regression gate's `THRESHOLD` above it
    (a difference the gate would not call a change) and not significantly different from its samples
    (`compare.significant`: Mann-Whitney U, else the 95% intervals apart). Rows without samples
    (per-container bytes, derived from medians) have no ties but equal values."""
    mine = next((t for v, t in zip(values, timings, strict=True) if v == best and t), None)
    return [
        mine is not None
        and v is not None
        and best < v < best * (1 + THRESHOLD)
        and bool(t)
        and not significant(mine, t or [])[0]
        for v, t in zip(values, timings, strict=True)
    ]


def _engine_lines(doc: RunDocument) -> list[str]:
    """ "containerd/overlayfs startup 7.2 ms, of which mechanism (containerd-overlayfs) 0.6 ms", for the
    verdict's measures where an engine driver and its mechanism both ran."""
    from layerbench.report.engines import engine_overheads

    wanted = {(m.scenario, m.metric) for m in MEASURES}
    return [r.text() for r in engine_overheads(doc) if (r.scenario, r.metric) in wanted]


def _row(v: Verdict, key: str) -> list[VerdictCell | None] | None:
    return next((cells for k, _, cells in v.rows if k == key), None)


def _avoided(v: Verdict) -> list[str]:
    """Drivers at least AVOID_FACTOR times the best on both startup and disk per container."""
    start, disk = _row(v, "startup"), _row(v, "disk")
    if not start or not disk:
        return []
    return [
        label
        for s, d, label in zip(start, disk, v.labels, strict=True)
        if s and d and s.ratio >= AVOID_FACTOR and d.ratio >= AVOID_FACTOR
    ]


def _unsure(v: Verdict) -> dict[str, tuple[str, str]]:
    """Drivers a measured row of the avoid rule marks (AVOID_FACTOR times the best or more) while the other row
    was not measured for them: label -> (what was measured, in words; what is missing, in words). Not advised."""
    out: dict[str, tuple[str, str]] = {}
    avoided = _avoided(v)
    rows = {key: _row(v, key) for key in AVOID_ROWS}
    for i, label in enumerate(v.labels):
        if label in avoided:
            continue
        got = {key: (row[i] if row else None) for key, row in rows.items()}
        marked = [key for key, c in got.items() if c is not None and c.ratio >= AVOID_FACTOR]
        missing = [key for key, c in got.items() if c is None]
        if marked and missing:
            worse = {"startup": "slower", "disk": "larger"}
            seen = " and ".join(
                f"{times_text(c.ratio, worse[k])} {AVOID_ROWS[k][0]}" for k in marked if (c := got[k]) is not None
            )
            gone = " and ".join(AVOID_ROWS[k][1] for k in missing)
            out[label] = (seen, gone)
    return out


def _versus(c: VerdictCell, best: VerdictCell, worse: str, unit: str) -> str:
    """`3.6x slower` against the recommended driver, or `+97.5 MiB` where that one is 0."""
    if c.value <= best.value * 1.005:
        return "alike"
    if best.value > 0:
        return times_text(c.value / best.value, worse)
    return f"+{human(c.value - best.value, unit)}"


def _winner(v: Verdict, key: str, what: str, worse: str = "slower") -> str | None:
    """`To X: overlay2, 487 µs; btrfs 3.6x, vfs 81x slower.` from one row of the matrix; a driver
    to avoid, or one a measured row marks as one while the other was not measured, is never recommended,
    only named when it is faster."""
    row = _row(v, key)
    if row is None:
        return None
    avoid = [*_avoided(v), *_unsure(v)]
    ranked = sorted(
        ((c, label) for c, label in zip(row, v.labels, strict=True) if c is not None), key=lambda p: p[0].ratio
    )
    kept = [(c, label) for c, label in ranked if label not in avoid]
    if len(ranked) < 2:
        return None
    unit = "bytes" if worse == "larger" else "ns"
    if not kept:
        return f"{what}: none of {', '.join(label for _, label in ranked)} can be advised (see below)."
    (best, name) = kept[0]
    ties = [(c, label) for c, label in kept[1:] if c.tied]  # this run cannot tell them from the best
    named = {name, *(label for _, label in ties)}
    others = ", ".join(
        f"{label} {_versus(c, best, worse, unit)}" + (" (tied, not advised)" if c.tied and label in avoid else "")
        for c, label in ranked
        if label not in named and c.ratio >= best.ratio
    )
    faster = [f"{label} ({_value(c)})" for c, label in ranked if c.ratio < best.ratio]
    either = "".join(f", or {label}, {_value(c)}" for c, label in ties)
    if ties:
        either += f" (a tie: under {THRESHOLD:.0%} apart, and not significant in this run)"
    tail = f" Faster, but not advised: {', '.join(faster)}." if faster else ""
    return f"{what}: {name}, {_value(best)}{either}" + (f"; {others}." if others else ".") + tail


def _value(c: VerdictCell) -> str:
    """The value of a cell's text, without its ratio."""
    return c.text.rsplit(" (", 1)[0]


def _node(v: Verdict) -> str | None:
    """Many containers of one image on one node: disk and page cache per further container, added up."""
    disk, memory = _row(v, "disk"), _row(v, "memory")
    what = "To run many containers of one image on one node (disk + page cache per further container)"
    if disk is None or memory is None:
        if disk is not None:
            return f"{what}: page cache per further container not measured (scenario page-cache-sharing)."
        return None
    avoid = [*_avoided(v), *_unsure(v)]
    both = sorted(
        (
            (d.value + m.value, d, m, label)
            for d, m, label in zip(disk, memory, v.labels, strict=True)
            if d is not None and m is not None
        ),
        key=lambda t: t[0],
    )
    kept = [t for t in both if t[3] not in avoid]
    if len(both) < 2 or not kept:
        return None
    total, d, m, name = kept[0]

    def parts(d: VerdictCell, m: VerdictCell) -> str:
        return f"{human(d.value, 'bytes')} + {human(m.value, 'bytes')}"

    others = ", ".join(
        f"{label} {human(t, 'bytes')} ({parts(od, om)}"
        + (f", {times_text(t / total, 'larger')})" if t > total * 1.005 else ", alike)")
        for t, od, om, label in both
        if label != name and t >= total
    )
    return f"{what}: {name}, {human(total, 'bytes')} ({parts(d, m)})" + (f"; {others}." if others else ".")


def _start_winner(v: Verdict, key: str, what: str) -> str | None:
    """`_winner` of a cold-start row, `what` followed by the row's image, link and runtime."""
    title = next((t for k, t, _ in v.rows if k == key), "")
    chosen = title[title.find("(") :] if "(" in title else ""
    return _winner(v, key, f"{what} {chosen}".rstrip())


def _advice(v: Verdict) -> list[str]:
    """Which driver for what, by the rules of docs/reports.md ("The verdict")."""
    out = [
        s
        for s in (
            _start_winner(v, "cold_start", "To start an application's container cold, pulled to ready"),
            _start_winner(v, "warm_start", "To start it again warm, its image present"),
            _winner(v, "startup", "To start containers fast"),
            _winner(v, "disk", "To run many containers of one image on one disk", "larger"),
            _winner(v, "memory", "To share the page cache between containers of one image", "larger"),
            _node(v),
            _winner(v, "copy_up_big", "To write into big files that came with the image"),
            _winner(v, "commit", "To commit containers into images"),
            _winner(v, "build", "To build images layer by layer"),
        )
        if s
    ]
    start, disk = _row(v, "startup"), _row(v, "disk")
    for label in _avoided(v):
        i = v.labels.index(label)
        s, d = (start or [None])[i], (disk or [None])[i]
        assert s is not None and d is not None
        out.append(
            f"Avoid {label} unless nothing else runs here: {times_text(s.ratio)} to start "
            f"and {times_text(d.ratio, 'larger')} per container than the best."
        )
    for label, (seen, gone) in _unsure(v).items():
        out.append(f"Not advised: {label}, {seen} than the best; whether to avoid it needs {gone} too, not measured.")
    failed = {
        label: v.rename[k].removeprefix("no: ")
        for k, label in zip(v.columns, v.labels, strict=True)
        if v.rename.get(k, "").startswith("no")
    }
    if failed:
        out.append(
            "Renaming a directory of the image fails on "
            + ", ".join(f"{k} ({e})" for k, e in failed.items())
            + ": programs that do it must fall back to copying (overlayfs without redirect_dir)."
        )
    return out


def verdict_table(v: Verdict, bold: tuple[str, str] = ("", "")) -> tuple[list[str], list[list[str]]]:
    """The matrix as a header and rows of text; the best value wrapped in `bold` (e.g. ("**", "**"))."""
    body = [
        [title, *("n/a" if c is None else f"{bold[0]}{c.text}{bold[1]}" if c.best else c.text for c in row)]
        for _, title, row in v.rows
    ]
    if v.rename:
        body.append(["renaming an image directory", *(v.rename.get(k, "n/a") for k in v.columns)])
    return ["measure (lower is better)", *v.labels], body


def verdict_text(v: Verdict, host: str = "") -> str:
    """The matrix and the advice as plain text for a terminal (titled `== verdict on HOST` for one host of a
    fleet run)."""
    title = f"== verdict on {host}" if host else "== verdict"
    header, body = verdict_table(v)
    if not body:
        return f'{title}\nnone of the verdict\'s measures is in these results (docs/reports.md, "The verdict")\n'
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    lines = [
        title,
        *("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in (header, *body)),
    ]
    if v.advice:
        lines += ["", *v.advice]
    if v.engine:
        lines += ["", "engines beside their mechanisms:", *(f"  {line}" for line in v.engine)]
    return "\n".join(lines) + "\n"


def verdict_dict(v: Verdict) -> dict[str, Any]:
    """The verdict as JSON-ready data: columns, one record per measure, rename support, advice."""
    columns = zip(v.columns, v.labels, strict=True)
    return {
        "columns": [{"driver": d, "backing": b, "label": label} for (d, b), label in columns],
        "rows": [
            {
                "measure": key,
                "title": title,
                "cells": [
                    None
                    if c is None
                    else {"value": c.value, "ratio": c.ratio, "best": c.best, "tied": c.tied, "text": c.text}
                    for c in cells
                ],
            }
            for key, title, cells in v.rows
        ],
        "rename": [v.rename.get(k) for k in v.columns],
        "advice": v.advice,
        "engine_overhead": v.engine,
    }
