"""Engine overhead: an engine driver's time beside its mechanism driver's, for the same operation.

An engine driver (containerd's snapshotters, Podman) names its mechanism (`Driver.mechanism`:
containerd/overlayfs -> containerd-overlayfs, podman/vfs -> vfs, ...). Where both ran the
same scenario with the same parameters (on the same backing when both did, else any), each
timed metric both have is paired by median: "containerd/overlayfs startup 7.2 ms, of which
mechanism (containerd-overlayfs) 0.6 ms". The engine minus the mechanism is what the engine
adds: its API or commands, its bookkeeping, its own way of doing the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerbench.analysis.results_model import CellResult, RunDocument, run_document
from layerbench.plugins import default_plugins
from layerbench.units import human

__all__ = ["EngineOverhead", "engine_overheads", "overhead_table", "mechanisms"]


@dataclass(frozen=True)
class EngineOverhead:
    """One operation of one engine cell beside its mechanism's cell."""

    engine: str
    mechanism: str
    scenario: str
    params: str
    backing: str
    metric: str
    engine_ns: float
    mechanism_ns: float

    @property
    def operation(self) -> str:
        return self.metric.removesuffix("_ns").replace("_", "-")

    @property
    def overhead_ns(self) -> float:
        return self.engine_ns - self.mechanism_ns

    def text(self) -> str:
        """`containerd/overlayfs startup 7.2 ms, of which mechanism (containerd-overlayfs) 0.6 ms`."""
        where = f" ({self.params})" if self.params else ""
        return (
            f"{self.engine} {self.operation}{where} {human(self.engine_ns, 'ns')}, of which mechanism "
            f"({self.mechanism}) {human(self.mechanism_ns, 'ns')}"
        )


def mechanisms(names: list[str]) -> dict[str, str]:
    """Each installed engine driver among `names` -> its mechanism driver."""
    drivers = default_plugins().registry.drivers
    return {n: m for n in names if n in drivers and (m := drivers[n].mechanism) is not None}


def _medians(cell: CellResult) -> dict[str, float]:
    return {m: v for m, data in cell.metrics.items() if m.endswith("_ns") and (v := data.median) is not None}


def engine_overheads(doc: RunDocument | Mapping[str, Any], metrics: set[str] | None = None) -> list[EngineOverhead]:
    """Every (engine cell, timed metric) whose mechanism ran the same scenario and parameters; only
    `metrics` when given."""
    ok = run_document(doc).ok()
    pairs = mechanisms(sorted({c.driver for c in ok}))
    out = []
    for cell in ok:
        mechanism = pairs.get(cell.driver)
        if mechanism is None:
            continue
        same = [
            c
            for c in ok
            if c.driver == mechanism
            and c.scenario == cell.scenario
            and c.params_text == cell.params_text
            and c.host == cell.host
        ]
        same.sort(key=lambda c: c.backing != cell.backing)  # the same backing first
        if not same:
            continue
        theirs = _medians(same[0])
        params = ", ".join(f"{k}={v}" for k, v in sorted(cell.params.items()))
        for metric, value in sorted(_medians(cell).items()):
            if metric in theirs and (metrics is None or metric in metrics):
                out.append(
                    EngineOverhead(
                        cell.driver, mechanism, cell.scenario, params, cell.backing, metric, value, theirs[metric]
                    )
                )
    return out


def overhead_table(rows: list[EngineOverhead]) -> tuple[list[str], list[list[str]]]:
    """A header and a row per pair: the engine's median, the mechanism's, and what the engine adds."""
    header = [
        "scenario",
        "parameters",
        "operation",
        "engine",
        "engine median",
        "mechanism",
        "mechanism median",
        "engine − mechanism",
    ]
    body = [
        [
            r.scenario,
            r.params,
            r.operation,
            r.engine,
            human(r.engine_ns, "ns"),
            r.mechanism,
            human(r.mechanism_ns, "ns"),
            ("+" if r.overhead_ns >= 0 else "−") + human(abs(r.overhead_ns), "ns"),
        ]
        for r in rows
    ]
    return header, body
