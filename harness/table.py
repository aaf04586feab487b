"""The comparison table printed at the end of a run: drivers side by side, medians."""

from __future__ import annotations

import math
from typing import Any

from .results import tidy

__all__ = ["comparison_table", "human"]


def human(value: float, unit: str) -> str:
    """A median in a unit a person reads at a glance."""
    if math.isnan(value):
        return "-"
    if unit == "ns":
        for scale, name in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.0f} ns"
    if unit == "bytes":
        for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.0f} B"
    return f"{value:.0f}"


def comparison_table(doc: dict[str, Any]) -> str:
    """Per scenario: one row per parameter set and metric, one column per driver."""
    rows = tidy([doc])
    drivers = list(dict.fromkeys(r["driver"] for r in rows))
    out: list[str] = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == scenario]
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for r in mine:
            cells.setdefault((r["params"], r["metric"]), {})[r["driver"]] = human(r["median"], r["unit"])
        header = ["params", "metric (median)", *drivers]
        body = [[p or "-", m, *(v.get(d, "") for d in drivers)] for (p, m), v in cells.items()]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
        line = lambda xs: "  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w) for i, (x, w) in enumerate(zip(xs, widths)))  # noqa: E731
        out += [f"== {scenario}", line(header), line(["-" * w for w in widths]), *map(line, body), ""]
    errors = [c for c in doc["cells"] if c["status"] != "ok"]
    for c in errors:
        out.append(f"{c['status']}: {c['scenario']} {c['driver']} {c['params']}: {c.get('error')}")
    return "\n".join(out).rstrip() + "\n"
