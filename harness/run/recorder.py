"""What a cell's samples record: each metric's values, each step's outcomes, the time its clocks held.

`record` is the `steps.Recorder` a sample's steps are given. A warm-up sample's values are
not kept (`warm`), though its outcomes are counted, as a measured sample's. The timer's own
cost (`run/overhead.py`) comes off every `_ns` value as it is recorded; `timed_ns` is the
sum of the measured samples' timed regions as taken, before that. `skipped` keeps what the
cell's image imports did not apply (a layer's device nodes, an xattr a mechanism reads as its own),
each entry once, whatever sample or build met it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from layerbench.analysis.results import unit_of
from layerbench.analysis.results_model import Metric
from layerbench.images.layer_apply import SKIPPED_LISTED

__all__ = ["CellRecorder", "SKIPPED_KEPT"]

#: entries of `skipped_at_import` a cell's record lists (its count counts them all): a hostile image's
#: million device nodes cannot bloat the results file
SKIPPED_KEPT = 20


class CellRecorder:
    """A cell's samples and outcomes, kept as its steps record them."""

    def __init__(self, overhead_ns: int = 0) -> None:
        self.overhead_ns = overhead_ns
        self.warm = False  # a warm-up sample is being taken: its values are not kept
        self.samples: dict[str, list[int]] = defaultdict(list)
        self.outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.timed_ns = 0
        self.skipped: dict[str, None] = {}  # what the cell's imports did not apply, each once, in order

    def record(self, metric: str, value: int) -> None:
        """A step's value, kept unless the sample is a warm-up one; an `_ns` one less the timer's cost."""
        if self.warm:
            return
        if metric.endswith("_ns"):
            self.timed_ns += value
            value = max(0, value - self.overhead_ns)
        self.samples[metric].append(value)

    def add(self, metric: str, value: int) -> None:
        """A value measured outside a step (the image's disk bytes, a sample's written bytes), as it is."""
        self.samples[metric].append(value)

    def outcome(self, label: str, name: str) -> None:
        """A step (`label`) ended in an allowed error or skipped entries: counted by `name`."""
        self.outcomes[label][name] += 1

    def skip(self, entries: list[str]) -> None:
        """What an import did not apply and why (`LayerStats.skipped`), kept once each."""
        for entry in entries:
            if len(self.skipped) >= SKIPPED_LISTED:
                return
            self.skipped[entry] = None

    def skipped_at_import(self) -> dict[str, Any] | None:
        """The result's `skipped_at_import`: how many entries, the first `SKIPPED_KEPT`; None when none."""
        if not self.skipped:
            return None
        return {"count": len(self.skipped), "entries": list(self.skipped)[:SKIPPED_KEPT]}

    def metrics(self) -> dict[str, Metric]:
        """The result's `metrics`: each metric's unit and samples."""
        return {m: Metric(unit_of(m), tuple(v)) for m, v in self.samples.items()}

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """The result's `outcomes`, as plain dicts."""
        return {label: dict(counts) for label, counts in self.outcomes.items()}

    def to_plain(self) -> dict[str, Any]:
        """What a forked child recorded, to hand back to its parent (`merge`)."""
        plain = {"samples": dict(self.samples), "outcomes": self.outcome_counts(), "timed_ns": self.timed_ns}
        return {**plain, "skipped": list(self.skipped)}

    def merge(self, plain: dict[str, Any]) -> None:
        """Take what a child recorded (`to_plain`)."""
        self.samples.update(plain["samples"])
        for label, counts in plain["outcomes"].items():
            self.outcomes[label].update(counts)
        self.timed_ns += plain["timed_ns"]
        self.skip(plain["skipped"])
