"""The regression gate's false alarms and power, measured on this machine's own runs.

For each A/A pair (two runs of the same code, back to back) it counts the metrics `compare`
judges worse or better (false alarms) and whether `--fail-on worse` would pass; then, in a copy
of the pair's new run, it scales one driver's timings by a factor (1.3 by default) and counts
how many of that driver's timings are caught as worse:

    python benchmarks/regression_gate.py A1.json B1.json [A2.json B2.json ...] [--factor 1.3]

`--learn` also judges each pair with the noise floors learned from the *other* pairs (out of
sample), as `compare --noise` would.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from layerbench.analysis import results
from layerbench.analysis.compare import compare_runs
from layerbench.analysis.results_model import CellResult, Metric, RunDocument


def slowed(run: RunDocument, driver: str, factor: float) -> RunDocument:
    """A copy of `run` whose `driver` took `factor` times as long in every timing sample."""

    def slow(cell: CellResult) -> CellResult:
        if cell.driver != driver:
            return cell
        metrics = {
            name: Metric(data.unit, tuple(v * factor for v in data.samples)) if name.endswith("_ns") else data
            for name, data in cell.metrics.items()
        }
        return dataclasses.replace(cell, metrics=metrics)

    return run.with_cells(slow(c) for c in run.cells)


def gate_lines(pairs: list[tuple[Path, Path]], factor: float, learn: bool) -> list[str]:
    docs = [(results.read_document(a), results.read_document(b)) for a, b in pairs]
    lines = []
    for i, ((a, b), (pa, pb)) in enumerate(zip(docs, pairs, strict=True)):
        noise = [p for j, p in enumerate(docs) if j != i] if learn else []
        comp = compare_runs(a, b, noise=noise)
        verdicts = [c.verdict for c in comp.changes]
        worse, better, noisy = verdicts.count("worse"), verdicts.count("better"), verdicts.count("noise")
        lines.append(
            f"A/A {pa.name} vs {pb.name}{' (floors from the other pairs)' if noise else ''}: "
            f"{worse} worse, {better} better, {noisy} noise of {len(verdicts)} metrics; "
            f"--fail-on worse exits {1 if worse else 0}"
        )
        for driver in sorted({c.driver for c in b.cells}):
            for side, (old, new) in (("new", (a, slowed(b, driver, factor))), ("same", (b, slowed(b, driver, factor)))):
                got = compare_runs(old, new, noise=noise).changes
                hit = [c for c in got if c.driver == driver and c.metric.endswith("_ns")]
                caught = sum(c.verdict == "worse" for c in hit)
                other = sum(c.verdict == "worse" for c in got if c.driver != driver)
                what = "the A/A pair's new run" if side == "new" else "a copy of the same run"
                lines.append(
                    f"  {driver} x{factor} in {what}: {caught} of {len(hit)} of its timings caught as worse; "
                    f"{other} other metrics worse"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="A/A pairs: OLD NEW [OLD NEW ...]")
    parser.add_argument("--factor", type=float, default=1.3)
    parser.add_argument("--learn", action="store_true", help="noise floors from the other pairs too")
    args = parser.parse_args(argv)
    if len(args.files) % 2:
        parser.error("give A/A pairs: an even number of files")
    pairs = list(zip(args.files[::2], args.files[1::2], strict=True))
    print("\n".join(gate_lines(pairs, args.factor, args.learn)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
