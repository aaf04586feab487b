"""The suite before and after, in one sitting: wall time, timed fraction, how cells stopped, CI widths.

Runs `layerbench run ARGS` twice, "before" with every cell pinned, built on its own store and
torn down before the next one starts (`--target-ci 0 --no-templates --no-overlap-teardown`),
"after" with the defaults and `--overlap-teardown`, and prints for each: wall time, the timed fraction (timed regions
over the cells' time), the stop reasons, the five slowest cells' splits; then the time of the
cells both ran, and per headline (`_ns`) metric of those cells the bootstrap CI half-width
over the median before and after. `--compare` also takes a run of an older layerbench (no
time split: its cells' durations still compare).

Usage:
    python benchmarks/suite_time.py [--work-root DIR] [--results-dir DIR] -- [layerbench run args]
    python benchmarks/suite_time.py --compare BEFORE.json AFTER.json     (two finished runs)
    python benchmarks/suite_time.py --stability RUN1.json RUN2.json      (runs back to back: wall time,
        phases, and rank stability: the same best driver in every verdict row)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from layerbench.analysis import results
from layerbench.analysis.results_model import CellKey, RunDocument
from layerbench.analysis.stats import ci_half_width
from layerbench.run.sampling import PHASES, STOP_REASONS, time_split_lines

BEFORE = ["--target-ci", "0", "--no-templates", "--no-overlap-teardown"]
AFTER = ["--overlap-teardown"]
Key = tuple[str, str, str, str, str]


def _run(label: str, extra: list[str], args: list[str], work_root: Path, results_dir: Path) -> tuple[Path, float]:
    """Run the suite; return its results file and wall seconds."""
    cmd = [
        sys.executable,
        "-c",
        "from layerbench.cli import main; main()",
        "run",
        *args,
        *extra,
        "--label",
        label,
        "--work-root",
        str(work_root),
        "--results-dir",
        str(results_dir),
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):  # 1: a cell failed; the others still count
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    path = next(line.split(": ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("results: "))
    return Path(path), wall


def _wall(run: RunDocument) -> float:
    def at(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")

    return (at(run.finished_utc or "") - at(run.started_utc)).total_seconds()


def _widths(run: RunDocument) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for c in run.ok():
        for metric, m in c.metrics.items():
            if metric.endswith("_ns") and len(m.samples) > 1:
                out[(c.scenario, c.driver, c.params_text, c.backing, metric)] = ci_half_width(m.samples)
    return out


def summary(name: str, run: RunDocument, wall: float) -> list[str]:
    splits = [c.time_split_s for c in run.cells if c.time_split_s]
    total = {p: sum(split[p] for split in splits) for p in PHASES}
    stops = [c.stop_reason for c in run.cells if c.time_split_s]
    return [
        f"== {name}: {len(run.cells)} cells, wall {wall:.1f} s, timed fraction "
        f"{total['timed'] / (sum(total.values()) or 1):.1%} of the cells' {sum(total.values()):.1f} s; "
        f"stopped: " + ", ".join(f"{r} {stops.count(r)}" for r in STOP_REASONS),
        *time_split_lines(run),
    ]


def same_cells(before: RunDocument, after: RunDocument) -> list[str]:
    """The summed durations of the cells both runs ran (a suite that grew compares on what it shared)."""
    a: dict[CellKey, float] = {c.key: c.duration_s or 0.0 for c in before.cells}
    b: dict[CellKey, float] = {c.key: c.duration_s or 0.0 for c in after.cells}
    both = set(a) & set(b)
    if not both:
        return ["no cell in both runs"]
    ta, tb = sum(a[k] for k in both), sum(b[k] for k in both)
    return [f"== the {len(both)} cells both ran: {ta:.1f} s before, {tb:.1f} s after (after / before {tb / ta:.2f})"]


def compare(before: RunDocument, after: RunDocument) -> list[str]:
    a, b = _widths(before), _widths(after)
    both = sorted(set(a) & set(b))
    if not both:
        return ["no headline metric in both runs"]
    wider = [k for k in both if b[k] > a[k] * 1.001]
    finite = [k for k in both if a[k] != float("inf") and b[k] != float("inf")]
    lines = [
        (
            f"== headline CI half-widths (of the median), {len(both)} metrics in both runs: "
            f"median before {statistics.median(a[k] for k in finite):.1%}, after "
            f"{statistics.median(b[k] for k in finite):.1%}; wider after: {len(wider)}"
        )
    ]
    for k in both:
        mark = "  WIDER" if k in wider else ""
        lines.append(f"  {' '.join(x for x in k[:4] if x)} {k[4]}: {a[k]:.1%} -> {b[k]:.1%}{mark}")
    return lines


def phases(run: RunDocument, wall: float) -> str:
    """The run's wall time and how its cells' time splits into phases (set-up, timed, sampling, teardown)."""
    splits = [c.time_split_s for c in run.cells if c.time_split_s]
    total = {p: sum(split[p] for split in splits) for p in PHASES}
    split = ", ".join(f"{p} {total[p]:.0f} s" for p in PHASES)
    return f"{run.label}: wall {wall // 60:.0f} min {wall % 60:.0f} s, {len(run.cells)} cells; {split}"


def best_drivers(run: RunDocument) -> dict[str, str]:
    """Each verdict row's best driver(s) (ties joined by '='), by row key."""
    from layerbench.report.verdict import verdict

    v = verdict(run)
    return {
        key: "=".join(sorted(label for c, label in zip(row, v.labels, strict=True) if c is not None and c.best))
        for key, _, row in v.rows
    }


def stability(runs: list[RunDocument]) -> list[str]:
    """Confidence as rank stability (issue 25): do the runs name the same best driver in every verdict row, and
    where not, do they contradict each other (no driver best or tied for best in every run) or only differ
    in a tie one run could not break (report/verdict.py `_tied`)?"""
    bests = [best_drivers(r) for r in runs]
    rows = sorted(set().union(*bests), key=lambda k: min(list(b).index(k) for b in bests if k in b))
    lines, same, apart = [], 0, 0
    for key in rows:
        names = [b.get(key, "-") for b in bests]
        common = set.intersection(*(set(n.split("=")) for n in names))
        same += len(set(names)) == 1
        apart += not common
        mark = "" if len(set(names)) == 1 else "  a tie in some runs" if common else "  DIFFERENT"
        lines.append(f"  {key}: {' | '.join(names)}{mark}")
    head = (
        f"== rank stability: the same best driver in {same} of {len(rows)} verdict rows across {len(runs)} runs; "
        f"runs contradict each other in {apart}"
    )
    return [head, *lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument(
        "--stability",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="finished runs of one suite, back to back: each one's wall time and phases, and whether they name "
        "the same best driver in every verdict row",
    )
    parser.add_argument("--work-root", type=Path, default=Path("/var/tmp/lb-suite-time"))
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/lb-suite-time-results"))
    parser.add_argument("args", nargs="*", help="layerbench run arguments (after --)")
    opts = parser.parse_args()
    if opts.stability:
        docs = [results.read_document(p) for p in opts.stability]
        print("\n".join(phases(d, _wall(d)) for d in docs))
        print("\n".join(stability(docs)))
        return
    if opts.compare:
        docs = [results.read_document(p) for p in opts.compare]
        walls = [_wall(d) for d in docs]
    else:
        print(f"load average before: {os.getloadavg()}", flush=True)
        runs = [
            _run(label, extra, opts.args, opts.work_root, opts.results_dir)
            for label, extra in (("before", BEFORE), ("after", AFTER))
        ]
        print(f"load average after: {os.getloadavg()}")
        docs = [results.read_document(p) for p, _ in runs]
        walls = [w for _, w in runs]
    for name, doc, wall in zip(("before", "after"), docs, walls, strict=True):
        print("\n".join(summary(name, doc, wall)))
    print(f"== wall time after / before: {walls[1] / walls[0]:.2f}")
    print("\n".join(same_cells(*docs)))
    print("\n".join(compare(*docs)))


if __name__ == "__main__":
    main()
