"""How many samples a cell takes, why it stopped, and where its time went.

A cell samples until its answer is sure: once it has `min_samples` (and its samples
took the scenario's `min_time_s`), it stops as soon
as every headline metric (each `_ns` metric its steps record) has a bootstrap 95% CI
of the median within +-`target_ci` of the median; else at `max_samples` (by default the
scenario's own count: a cell ends early once sure, never later than before), or when its
sampling loop has run `budget_s` seconds. A pinned cell (`--samples`, `--target-ci 0`,
or a scenario's `[repeat] adaptive = false`) takes exactly its samples, as before.
docs/performance.md describes the rule and the time split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerbench.analysis.results_model import RunDocument, run_document
from layerbench.analysis.stats import ci_half_width

__all__ = ["Sampling", "STOP_REASONS", "stop_reason", "headline_widths", "time_split_lines", "MAX_SAMPLES"]

#: a pinned cell's ceiling when `min_time_s` keeps it sampling
MAX_SAMPLES = 10_000
#: why a cell stopped sampling
STOP_REASONS = ("target", "max_samples", "budget", "pinned")
#: the parts of a cell's time (results: time_split_s), in the order they happen
PHASES = ("setup", "timed", "sampling", "teardown")


@dataclass
class Sampling:
    """A cell's sampling rule. `target_ci` 0 pins the cell to `samples` (and `min_time_s`)."""

    samples: int
    warmup: int
    min_time_s: float
    cold: bool
    timeout_s: float = 0.0
    target_ci: float = 0.0
    min_samples: int = 5
    max_samples: int | None = None  # None: the scenario's samples (sampling until sure only ends cells early)
    budget_s: float = 0.0  # the sampling loop's seconds after which a cell stops (0: no limit)

    @property
    def adaptive(self) -> bool:
        return self.target_ci > 0

    def bounds(self) -> tuple[int, int]:
        """(least, most) measured samples: the least is never more than the scenario's own count."""
        low = min(self.min_samples, self.samples)
        return low, max(self.samples if self.max_samples is None else self.max_samples, low)


def headline_widths(recorded: dict[str, list[int]]) -> dict[str, float]:
    """Each headline (`_ns`) metric's CI half-width as a fraction of its median."""
    return {m: ci_half_width(v) for m, v in sorted(recorded.items()) if m.endswith("_ns") and v}


def stop_reason(
    sampling: Sampling, measured: int, spent_s: float, loop_s: float, recorded: dict[str, list[int]]
) -> str | None:
    """Why the cell stops after `measured` samples that took `spent_s` (its loop `loop_s`), or None to go on.

    The CIs are computed here, between samples, never inside a timed region.
    """
    if not sampling.adaptive:
        if measured < sampling.samples or (spent_s < sampling.min_time_s and measured < MAX_SAMPLES):
            return None
        return "pinned"
    low, high = sampling.bounds()
    if measured < low or (spent_s < sampling.min_time_s and measured < MAX_SAMPLES):
        return None
    if all(w <= sampling.target_ci for w in headline_widths(recorded).values()):
        return "target"
    if measured >= high:
        return "max_samples"
    if sampling.budget_s and loop_s >= sampling.budget_s:
        return "budget"
    return None


def _seconds(x: float) -> str:
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min"


def time_split_lines(doc: RunDocument | Mapping[str, Any], slowest: int = 5) -> list[str]:
    """Where the run's time went: the total split, how cells stopped, and the `slowest` cells' splits."""
    cells = [(c, c.time_split_s) for c in run_document(doc).cells if c.time_split_s]
    if not cells:
        return []
    total = {p: sum(split.get(p, 0.0) for _, split in cells) for p in PHASES}
    whole = sum(total.values()) or math.inf
    lines = [
        f"time: {len(cells)} cells took {_seconds(sum(total.values()))}: "
        + ", ".join(f"{p} {_seconds(total[p])} ({total[p] / whole:.0%})" for p in PHASES)
    ]
    stops = [c.stop_reason for c, _ in cells]
    counted = [f"{stops.count(r)} {r.replace('_', ' ')}" for r in STOP_REASONS if stops.count(r)]
    if counted:
        lines.append("stopped on: " + ", ".join(counted))
    lines.append(f"slowest {min(slowest, len(cells))} cells:")
    for c, split in sorted(cells, key=lambda one: -sum(one[1].values()))[:slowest]:
        lines.append(
            f"  {c.name(params_first=True)}: {_seconds(sum(split.values()))} = "
            + ", ".join(f"{p} {split.get(p, 0.0):.1f}" for p in PHASES)
            + f" ({c.sample_count or 0} samples, {str(c.stop_reason or '?').replace('_', ' ')})"
        )
    return lines
