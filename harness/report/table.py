"""The comparison table printed at the end of a run: drivers side by side, medians."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from layerbench.analysis.results_model import CellResult, RunDocument, cell_result, median, run_document
from layerbench.analysis.stats import bootstrap_ci, wide_ci
from layerbench.report.rows import metric_rows
from layerbench.units import human, params_human, times_text

__all__ = [
    "comparison_table",
    "several_hosts",
    "host_suffix",
    "human",
    "run_warnings",
    "skipped_at_import_text",
    "run_summary",
    "run_facts",
    "claims_lines",
    "metric_title",
    "times_text",
    "params_human",
]

#: what people call a metric, for titles and axes (others: the name without its unit suffix)
METRIC_TITLES = {
    "startup_ns": "startup time",
    "copy_up_ns": "copy-up time",
    "disk_bytes": "disk used",
    "image_disk_bytes": "image disk used",
    "commit_ns": "commit time",
    "build_ns": "build time",
    "read_cold_ns": "cold read time",
    "read_warm_ns": "warm read time",
    "second_write_ns": "second write time",
    "written_bytes": "bytes written",
    "inodes": "inodes",
    "commit_layer_bytes": "committed layer size",
    "build_disk_bytes": "disk used by the build",
    "disk_walk_bytes": "disk by walking the tree",
}


def metric_title(metric: str) -> str:
    """`copy_up_ns` -> `copy-up time`; an unknown `foo_bar_ns` -> `foo bar time`."""
    if metric in METRIC_TITLES:
        return METRIC_TITLES[metric]
    base = metric.removesuffix("_ns").removesuffix("_bytes").replace("_", " ")
    return f"{base} time" if metric.endswith("_ns") else f"{base} size" if metric.endswith("_bytes") else base


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders `file_size=4096` before `file_size=1048576`."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text))


def _line(cells: list[str], widths: list[int]) -> str:
    """Labels left-aligned, figures right-aligned."""
    return "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(cells, widths, strict=True)))


def several_hosts(doc: RunDocument | Mapping[str, Any]) -> bool:
    """Did the run's cells run on more than one host (a fleet run)?"""
    return run_document(doc).several_hosts


def host_suffix(cell: CellResult | Mapping[str, Any], several: bool) -> str:
    """` @ host-a` for a cell of a run with several hosts, else empty."""
    host = cell_result(cell).host
    return f" @ {host}" if several and host else ""


def comparison_table(doc: RunDocument | Mapping[str, Any]) -> str:
    """Per scenario: one row per parameter set and metric, one column per driver (`driver @ host` when the
    run has several hosts)."""
    run = run_document(doc)
    several = run.several_hosts
    rows = []
    for cell in run.cells:  # the cell's rows, each with its cell's column
        column = cell.driver + host_suffix(cell, several)
        rows += [dataclasses.replace(r, driver=column) for r in metric_rows([cell])]
    rows.sort(key=lambda r: (r.scenario, _natural(r.params)))
    drivers = sorted({r.driver for r in rows})
    out: list[str] = []
    for scenario in dict.fromkeys(r.scenario for r in rows):
        mine = [r for r in rows if r.scenario == scenario]
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for r in mine:
            cells.setdefault((r.params, r.metric), {})[r.driver] = human(r.median, r.unit)
        header = ["params", "metric (median)", *drivers]
        ran = {(r.params, r.driver) for r in mine}  # a metric such a cell lacks does not apply: n/a
        body = [
            [params_human(p), m, *(v.get(d, "n/a" if (p, d) in ran else "") for d in drivers)]
            for (p, m), v in cells.items()
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
        rule = ["-" * w for w in widths]
        out += [f"== {scenario}", *(_line(xs, widths) for xs in (header, rule, *body)), ""]
    for c in sorted(run.cells, key=lambda c: (c.scenario, c.driver, c.host)):
        for label, counts in c.outcomes.items():
            seen = ", ".join(f"{name} x{n}" for name, n in counts.items())
            out.append(f"outcome: {c.name(host=several)} {label}: {seen}")
        if c.skipped_at_import:
            out.append(f"skipped at import: {c.name(host=several)}: {skipped_at_import_text(c.skipped_at_import)}")
    out += [f"{c.status}: {c.name(host=several)}: {c.error}" for c in run.cells if not c.ok]
    return "\n".join(out).rstrip() + "\n"


def skipped_at_import_text(skipped: Mapping[str, Any], shown: int = 3) -> str:
    """A cell's `skipped_at_import` in one phrase: `3 entries (dev/null: device nodes need root; ...)`,
    its first `shown` entries, the rest counted (its record lists the first 20)."""
    count, entries = skipped.get("count", 0), list(skipped.get("entries", ()))
    more = count - min(len(entries), shown)
    listed = "; ".join(entries[:shown]) + (f"; {more} more" if more > 0 else "")
    return f"{count} {'entry' if count == 1 else 'entries'} ({listed})"


def run_warnings(doc: RunDocument | Mapping[str, Any]) -> list[str]:
    """Timings whose 95% bootstrap CI of the median is wide (hyperfine-style: a real problem, not one
    outlier), grouped per cell, with the interval itself (it is rarely symmetric), parameters as people write
    them and what to do."""
    run = run_document(doc)
    out, several = [], run.several_hosts
    for c in run.cells:
        wide = []
        for metric, data in c.metrics.items():
            if wide_ci(data.samples, data.unit) is not None and (mid := median(data.samples)) is not None:
                low, high = bootstrap_ci(data.samples)
                unit = data.unit
                wide.append(f"{metric} {human(mid, unit)}, 95% CI {human(low, unit)} to {human(high, unit)}")
        if wide:
            out.append(f"{c.name(human=True, host=several)}: {'; '.join(wide)}: more --samples or a quieter machine")
    return out


def run_facts(doc: RunDocument | Mapping[str, Any]) -> str:
    """How the run measured: the suite (quick or full), the samples each cell took, how its stores were made."""
    run = run_document(doc)
    settings = run.settings or {}
    ok = run.ok()
    suite = (
        "quick suite (--quick: each scenario's [quick] values and samples)" if settings.get("quick") else "full suite"
    )
    if settings.get("long"):
        suite += " with the long sweeps (--long)"
    counts = sorted(int(c.get("samples") or max((len(m.samples) for m in c.metrics.values()), default=0)) for c in ok)
    if counts:
        mid = counts[len(counts) // 2]
        samples = (
            f"{counts[0]} sample{'s' * (counts[0] != 1)} per cell"
            if counts[0] == counts[-1]
            else f"{counts[0]} to {counts[-1]} samples per cell (median {mid})"
        )
    else:
        samples = "no cell finished"
    backings = sorted({c.backing or "dir" for c in ok})
    loops = [c.get("loop_direct_io") for c in ok if (c.backing or "dir") != "dir"]
    direct, buffered = sum(x is True for x in loops), sum(x is False for x in loops)
    how = (
        "direct I/O"
        if direct and not buffered
        else "buffered I/O (--loop-io buffered)"
        if buffered and not direct
        else f"direct I/O on {direct} cells, buffered on {buffered}"
        if direct and buffered
        else "its I/O mode not recorded (an older results file)"
    )
    stores = f"a fresh {'/'.join(b for b in backings if b != 'dir')} filesystem per cell on a loop device, {how}"
    if not loops:
        stores = "plain directories (no loop devices here)"
    elif "dir" in backings:
        stores += "; some cells on plain directories"
    templates = sum(bool(c.get("template")) for c in ok)
    if templates:
        stores += f"; {templates} cells started from a template store's copy (--templates)"
    return f"run: {suite}; {samples}; stores: {stores}"


def claims_lines(doc: RunDocument | Mapping[str, Any]) -> list[str]:
    """The claims decided by the run, with their figures; those it did not measure folded into one line."""
    from layerbench.analysis.claims import NOT_MEASURED, evaluate, where

    rows = evaluate(doc)
    lines = ["== claims"]
    for row in rows:
        if row["verdict"] != NOT_MEASURED:
            lines.append(f"[{row['verdict']}]{where(row)} {row['claim']}")
            if row["figures"]:
                lines.append(f"    {row['figures']}")
    unmeasured = sum(row["verdict"] == NOT_MEASURED for row in rows)
    if unmeasured:
        lines.append(
            f"[not measured] {unmeasured} of {len(rows)} claims: these cells do not measure them "
            "(`layerbench claims FILE` lists every claim)"
        )
    return lines


def run_summary(doc: RunDocument | Mapping[str, Any], path: Path, elapsed_s: float | None = None) -> str:
    """The end of a run: the claims (those not measured in one line), how it measured, the time taken, how many
    warnings, the next command, and the verdict last, so that it is what a terminal shows."""
    from layerbench.report.verdict import verdict, verdict_text

    run = run_document(doc)
    lines = [*claims_lines(run), ""]
    finished, started = run.finished_utc, run.started_utc
    if elapsed_s is None and finished and started:
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        elapsed_s = (datetime.strptime(finished, stamp) - datetime.strptime(started, stamp)).total_seconds()
    took = (
        f"{elapsed_s // 60:.0f} min {elapsed_s % 60:.0f} s"
        if elapsed_s and elapsed_s >= 60
        else f"{elapsed_s:.0f} s"
        if elapsed_s is not None
        else "unknown"
    )
    n = len(run_warnings(run))
    lines.append(run_facts(run))
    lines.append(f"{len(run.cells)} cells in {took}; {n} warning{'s' * (n != 1)}" + (" (see the report)" if n else ""))
    lines.append(f"next: layerbench report {path} -o report.html")
    # one driver order on every host: the run's own (its settings), then any other in the order the cells came
    order = list(dict.fromkeys([*(run.settings or {}).get("drivers", []), *(c.driver for c in run.cells)]))
    lines += ["", *(verdict_text(verdict(part, order), host) for host, part in run.by_host())]
    return "\n".join(lines).rstrip("\n") + "\n"
