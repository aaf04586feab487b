"""The report as Markdown, for a README or a pull request."""

from __future__ import annotations

import math
from typing import Any

from .report import Report
from .table import human

__all__ = ["markdown", "ratio_text", "scenario_table", "stats_table", "slopes_table", "versions_table", "claims_table",
           "intro", "MdTable", "SLOPES_NOTE"]

MdTable = tuple[list[str], list[list[str]]]  # header, body


def ratio_text(ratio: float) -> str:
    """`×0.52`: a driver's median over the baseline's; empty when there is none."""
    return "" if math.isnan(ratio) else f"×{ratio:.3g}"


def scenario_table(report: Report, scenario: str) -> MdTable:
    """One row per parameter set and metric, one column per driver: median (×ratio)."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in report.rows:
        if r["scenario"] != scenario:
            continue
        text = human(r["median"], r["unit"])
        if r["driver"] != report.baseline and ratio_text(r["ratio"]):
            text += f" ({ratio_text(r['ratio'])})"
        cells.setdefault((r["params"], r["metric"]), {})[r["driver"]] = text
    drivers = [d for d in report.drivers if any(d in v for v in cells.values())]
    header = ["params", "metric (median)", *drivers]
    return header, [[p or "-", m, *(v.get(d, "") for d in drivers)] for (p, m), v in cells.items()]


def stats_table(report: Report, scenario: str) -> MdTable:
    """Every statistic of every metric of one scenario."""
    header = ["params", "metric", "driver", "n", "median", "95% CI", "IQR", "p90", "p99", "min", "max",
              "outliers MAD/Tukey"]
    mine = [r for r in report.rows if r["scenario"] == scenario]
    keys = list(dict.fromkeys((r["params"], r["metric"]) for r in mine))
    mine.sort(key=lambda r: (keys.index((r["params"], r["metric"])), report.drivers.index(r["driver"])))
    body = []
    for r in mine:
        h = lambda k: human(r[k], r["unit"])  # noqa: E731
        body.append([r["params"] or "-", r["metric"], r["driver"], str(r["n"]), h("median"),
                     f"{h('ci95_low')} – {h('ci95_high')}", h("iqr"), h("p90"), h("p99"), h("min"), h("max"),
                     f"{r['outliers_mad']}/{r['outliers_tukey']}"])
    return header, body


SLOPES_NOTE = "Fitted slopes: a least-squares line through the medians (numpy.polyfit, degree 1)."


def slopes_table(report: Report, scenario: str) -> MdTable:
    """How startup and disk grow per layer, file or container: one row per fitted line."""
    body = [[f"{f['metric']} vs {f['param']}" + (f" ({f['rest']})" if f["rest"] else ""), f["driver"], f["text"],
             str(f["points"])] for f in report.slopes if f["scenario"] == scenario]
    return ["growth", "driver", "slope", "points"], body


def versions_table(report: Report) -> MdTable:
    """Machine, tool and helper versions, one column per run."""
    def memory(run: dict[str, Any]) -> str:
        value = run["machine"].get("memory_bytes")
        return human(float(value), "bytes") if value else ""

    rows: list[tuple[str, Any]] = [
        ("started (UTC)", lambda run: run["started_utc"]),
        ("status", lambda run: run["status"]),
        ("machine", lambda run: run["machine"].get("name")),
        ("kernel", lambda run: run["machine"].get("kernel")),
        ("arch", lambda run: run["machine"].get("arch")),
        ("cpu", lambda run: f"{run['machine'].get('cpu')} × {run['machine'].get('cpus')}"),
        ("memory", memory),
        ("python", lambda run: run["machine"].get("python")),
        ("layerbench", lambda run: f"{run['tool'].get('version')} ({run['tool'].get('git_commit') or 'no git'})"),
    ]
    helpers = list(dict.fromkeys(h for run in report.runs for h in (run.get("helpers") or {})))
    rows += [(h, lambda run, h=h: (run.get("helpers") or {}).get(h, "")) for h in helpers]
    header = ["", *(run["label"] for run in report.runs)]
    return header, [[name, *(str(get(run) if get(run) is not None else "") for run in report.runs)]
                    for name, get in rows]


def claims_table(report: Report) -> MdTable:
    assert report.claims is not None
    return ["claim", "verdict", "figures"], [[c["claim"], c["verdict"], c["figures"]] for c in report.claims]


def intro(report: Report) -> str:
    """What the numbers in the tables are (with <b> around the baseline's name)."""
    if report.baseline not in report.drivers:
        return "Medians."
    return (f"Medians; in brackets each driver's median over <b>{report.baseline}</b>'s "
            "(below ×1 is faster or smaller).")


def _md(table: MdTable, numeric_from: int = 2) -> list[str]:
    header, body = table
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    align = ["---" if i < numeric_from else "--:" for i in range(len(header))]
    return ["| " + " | ".join(map(esc, row)) + " |" for row in (header, align, *body)]


def markdown(report: Report) -> str:
    """The whole report: per scenario a driver-by-driver table, claims, warnings, versions."""
    out = ["# layerbench report", ""]
    out.append("Runs: " + ", ".join(f"`{r['label']}` ({r['started_utc']}, {r['machine'].get('name')})"
                                    for r in report.runs) + ".")
    out += ["", intro(report).replace("<b>", "**").replace("</b>", "**"), ""]
    out += [f"> {n}" for n in report.notes] + ([""] if report.notes else [])
    for scenario in dict.fromkeys(r["scenario"] for r in report.rows):
        out += [f"## {scenario}", ""]
        description = report.doc["scenarios"].get(scenario, {}).get("description")
        if description:
            out += [" ".join(description.split()), ""]
        out += _md(scenario_table(report, scenario)) + [""]
        slopes = slopes_table(report, scenario)
        if slopes[1]:
            out += [SLOPES_NOTE, ""] + _md(slopes) + [""]
        out += ["<details><summary>Statistics</summary>", ""]
        out += _md(stats_table(report, scenario), numeric_from=3) + ["", "</details>", ""]
    if report.claims is not None:
        out += ["## Claims", ""] + _md(claims_table(report), numeric_from=3) + [""]
    if report.warnings:
        out += ["## Warnings", ""] + [f"- {w}" for w in report.warnings] + [""]
    if report.errors:
        out += ["## Errors", ""] + [f"- {e}" for e in report.errors] + [""]
    out += ["## Machine and versions", ""] + _md(versions_table(report), numeric_from=99) + [""]
    return "\n".join(out)
