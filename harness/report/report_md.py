"""The report as Markdown, for a README or a pull request."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from layerbench.analysis.results_model import Machine
from layerbench.report.model import Report, RunRecord
from layerbench.units import human, params_human

__all__ = [
    "ratio_text",
    "scenario_table",
    "stats_table",
    "slopes_table",
    "versions_table",
    "claims_table",
    "hosts_table",
    "HOSTS_NOTE",
    "intro",
    "MdTable",
    "SLOPES_NOTE",
    "NA",
    "render_md",
    "render_md_long",
    "verdict_section",
    "engine_section",
    "key_metrics",
]

MdTable = tuple[list[str], list[list[str]]]  # header, body


def ratio_text(ratio: float) -> str:
    """`×0.52`, `×1/1,200`: a driver's median over the baseline's; empty when there is none."""
    if math.isnan(ratio) or math.isinf(ratio):
        return ""
    if ratio >= 1000:
        return f"×{ratio:,.0f}"
    return f"×{ratio:.3g}" if ratio >= 0.1 or ratio == 0 else f"×1/{float(f'{1 / ratio:.2g}'):,.0f}"


NA = "n/a"  # a metric the cell does not measure: never 0


def scenario_table(report: Report, scenario: str, metrics: list[str] | None = None) -> MdTable:
    """One row per parameter set and metric, one column per driver (per driver and backing in a
    backing sweep, and host in a fleet run): median (×ratio); n/a where a driver does not measure the metric."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in report.rows:
        if r.scenario != scenario or (metrics is not None and r.metric not in metrics):
            continue
        text = human(r.median, r.unit) if r.n else NA
        if r.driver != report.baseline and ratio_text(r.ratio):
            text += f" ({ratio_text(r.ratio)})"
        cells.setdefault((r.params, r.metric), {})[report.label(r.driver, r.backing, r.host)] = text
    columns = [
        c for c in dict.fromkeys(report.label(*s) for s in report.series()) if any(c in v for v in cells.values())
    ]
    header = ["params", "metric (median)", *columns]
    return header, [[params_human(p), m, *(v.get(c, NA) for c in columns)] for (p, m), v in cells.items()]


def stats_table(report: Report, scenario: str) -> MdTable:
    """Every statistic of every metric of one scenario."""
    header = [
        "params",
        "metric",
        "driver",
        "n",
        "median",
        "95% CI",
        "IQR",
        "p90",
        "p99",
        "min",
        "max",
        "outliers MAD/Tukey",
    ]
    mine = [r for r in report.rows if r.scenario == scenario]
    keys = list(dict.fromkeys((r.params, r.metric) for r in mine))
    series = report.series()
    mine.sort(key=lambda r: (keys.index((r.params, r.metric)), series.index((r.driver, r.backing, r.host))))
    body = []
    for r in mine:
        low, median, high, iqr, p90, p99, least, most = (
            human(v, r.unit) for v in (r.ci95_low, r.median, r.ci95_high, r.iqr, r.p90, r.p99, r.min, r.max)
        )
        label = report.label(r.driver, r.backing, r.host)
        outliers = f"{r.outliers_mad}/{r.outliers_tukey}"
        body.append(
            [
                params_human(r.params),
                r.metric,
                label,
                str(r.n),
                median,
                f"{low} – {high}",
                iqr,
                p90,
                p99,
                least,
                most,
                outliers,
            ]
        )
    return header, body


SLOPES_NOTE = (
    "Fitted slopes: a least-squares line through the medians (numpy.polyfit, degree 1), shown where "
    "it fits (at least 3 values and R² ≥ 0.9); elsewhere the growth is not a straight line."
)


def slopes_table(report: Report, scenario: str) -> MdTable:
    """How startup and disk grow per layer, file or container: one row per fitted line, with R²."""
    body = [
        [
            f"{f.metric} vs {f.param}" + (f" ({f.rest})" if f.rest else ""),
            report.label(f.driver, f.backing, f.host),
            f.text,
            f"{f.r2:.2f}",
            str(f.points),
        ]
        for f in report.slopes
        if f.scenario == scenario
    ]
    return ["growth", "driver", "slope", "R²", "points"], body


def hosts_table(report: Report, scenario: str, metrics: list[str] | None = None) -> MdTable:
    """Across hosts: per parameter set and metric, one column per driver (and backing in a sweep): the
    lowest – highest of the hosts' medians and their ratio; no rows unless some metric ran on several hosts."""
    if not report.hosts:
        return [], []
    medians: dict[tuple[str, str], dict[str, list[float]]] = {}
    units: dict[str, str] = {}
    for r in report.rows:
        if r.scenario != scenario or (metrics is not None and r.metric not in metrics) or not r.n:
            continue
        at = medians.setdefault((r.params, r.metric), {})
        at.setdefault(report.label(r.driver, r.backing), []).append(r.median)
        units[r.metric] = r.unit
    columns = [
        c
        for c in dict.fromkeys(report.label(d, b) for d, b, _ in report.series())
        if any(c in v for v in medians.values())
    ]

    def spread(values: list[float] | None, unit: str) -> str:
        if not values:
            return NA
        if len(values) < 2:
            return "one host"
        low, high = min(values), max(values)
        ratio = f"×{high / low:.3g}" if low > 0 else "×∞" if high > 0 else "×1"
        return f"{human(low, unit)} – {human(high, unit)} ({ratio})"

    header = ["params", "metric (hosts' medians)", *columns]
    if all(len(values) < 2 for at in medians.values() for values in at.values()):
        return header, []  # no metric ran on two hosts: nothing to spread
    return header, [
        [params_human(p), m, *(spread(v.get(c), units[m]) for c in columns)] for (p, m), v in medians.items()
    ]


HOSTS_NOTE = "Across hosts: the lowest and highest of the hosts' medians, and highest over lowest."


def _machines(report: Report) -> list[RunRecord]:
    """One column per run, or per host of a fleet run (`label @ host`: that host's machine and helpers)."""
    out = []
    for run in report.runs:
        if not run.hosts:
            out.append(run)
        for name, host in sorted(run.hosts.items()):
            label = f"{run.label} @ {name}" if len(run.hosts) > 1 else run.label
            machine = Machine.from_dict(host.get("machine") or {})
            out.append(dataclasses.replace(run, label=label, machine=machine, helpers=host.get("helpers")))
    return out


def versions_table(report: Report) -> MdTable:
    """Machine (its disk too), tool and helper versions: one column per run, or per host of a fleet run."""
    runs = _machines(report)

    def memory(run: RunRecord) -> str:
        value = run.machine.memory_bytes
        return human(float(value), "bytes") if value else ""

    rows: list[tuple[str, Callable[[RunRecord], Any]]] = [
        ("started (UTC)", lambda run: run.started_utc),
        ("status", lambda run: run.status),
        ("machine", lambda run: run.machine.name),
        ("kernel", lambda run: run.machine.kernel),
        ("arch", lambda run: run.machine.arch),
        ("cpu", lambda run: f"{run.machine.cpu} × {run.machine.cpus}"),
        ("memory", memory),
        ("python", lambda run: run.machine.python),
        ("layerbench", lambda run: f"{run.tool.version} ({run.tool.git_commit or 'no git'})"),
    ]
    if any(run.machine.disk for run in runs):  # the disk the stores were made on (files since issue 21)
        rows.insert(7, ("disk", lambda run: run.machine.disk))
    helpers = list(dict.fromkeys(h for run in runs for h in (run.helpers or {})))

    def helper(name: str) -> Callable[[RunRecord], Any]:
        return lambda run: (run.helpers or {}).get(name, "")

    rows += [(h, helper(h)) for h in helpers]
    header = ["", *(run.label for run in runs)]
    return header, [[name, *(str(get(run) if get(run) is not None else "") for run in runs)] for name, get in rows]


def claims_table(report: Report) -> MdTable:
    """Claim, verdict, figures; and the host and the backing where a claim was decided per host of a fleet
    or per backing of a sweep."""
    assert report.claims is not None
    where = [k for k in ("host", "backing") if any(c.get(k) for c in report.claims)]
    return ["claim", *where, "verdict", "figures"], [
        [c["claim"], *(c.get(k, "") for k in where), c["verdict"], c["figures"]] for c in report.claims
    ]


def intro(report: Report, bold: Callable[[str], str] = lambda name: f"**{name}**") -> str:
    """What the numbers in the tables are, the baseline's name set off by `bold` (Markdown's `**`;
    the HTML report's escapes it: a driver name is untrusted, from a results file or --baseline)."""
    if report.baseline not in report.drivers:
        return "Medians."
    return f"Medians; in brackets each driver's median over {bold(report.baseline)}'s (below ×1 is faster or smaller)."


def _md(table: MdTable, numeric_from: int = 2) -> list[str]:
    header, body = table
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    align = ["---" if i < numeric_from else "--:" for i in range(len(header))]
    return ["| " + " | ".join(map(esc, row)) + " |" for row in (header, align, *body)]


#: metrics a short report leaves out of its tables: context for the headline ones, in the long form
SECONDARY_METRICS = frozenset({"image_disk_bytes", "disk_walk_bytes", "inodes", "written_bytes", "build_disk_bytes"})


def key_metrics(report: Report, scenario: str) -> list[str]:
    """A scenario's headline metrics: all but SECONDARY_METRICS, and startup only where it is the point
    (no other time is measured, or layers, files or containers are swept)."""
    mine = list(dict.fromkeys(r.metric for r in report.rows if r.scenario == scenario))
    keep = [m for m in mine if m not in SECONDARY_METRICS]
    swept = set(report.document.scenarios.get(scenario, {}).get("params", {}))
    if (
        "startup_ns" in keep
        and len([m for m in keep if m.endswith("_ns")]) > 1
        and not swept & {"layers", "files", "containers"}
    ):
        keep.remove("startup_ns")
    return keep or mine


def verdict_section(report: Report) -> list[str]:
    """The verdict matrix (best in bold) and the advice, one per host of a fleet run, as Markdown lines;
    empty without a verdict."""
    from layerbench.report.verdict import verdict_table

    shown = [(host, v) for host, v in report.verdicts if v.rows]
    if not shown:
        return []
    out = ["## Verdict", ""]
    for host, v in shown:
        out += [f"### Verdict on {host}", ""] if host else []
        out += [*_md(verdict_table(v, ("**", "**")), numeric_from=99), ""]
        out += [f"- {line}" for line in v.advice] + ([""] if v.advice else [])
        out += ["Engines beside their mechanisms:", ""] if v.engine else []
        out += [f"- {line}" for line in v.engine] + ([""] if v.engine else [])
    out += [
        (
            "Each value is the median; in brackets its ratio to the best driver's (see docs/reports.md, "
            '"The verdict", for which cell each row takes and the rules of the advice).'
        ),
        "",
    ]
    return out


def engine_section(report: Report) -> list[str]:
    """Every operation an engine driver and its mechanism driver both measured, side by side."""
    from layerbench.report.engines import overhead_table

    if not report.engine_overheads:
        return []
    return [
        "## Engine overhead",
        "",
        (
            "An engine driver (containerd's snapshotters, Podman) beside the driver that does its mechanism "
            "without the engine, for the same scenario and parameters (medians; docs/drivers.md, Engines)."
        ),
        "",
        *_md(overhead_table(report.engine_overheads), numeric_from=99),
        "",
    ]


def _head(report: Report) -> list[str]:
    out = ["# layerbench report", ""]
    out.append("Runs: " + ", ".join(f"`{r.label}` ({r.started_utc}, {r.machine.name})" for r in report.runs) + ".")
    out += [""] + [f"- `{r.label}`: {r.facts}" for r in report.runs if r.facts]
    out += [""] + [f"> {n}" for n in report.notes] + ([""] if report.notes else [])
    out += verdict_section(report)
    out += engine_section(report)
    if report.claims is not None:
        out += ["## Claims", "", *_md(claims_table(report), numeric_from=99), ""]
    return out


def _tail(report: Report, warnings: bool) -> list[str]:
    out = []
    if report.warnings:
        if warnings:
            out += ["## Warnings", ""] + [f"- {w}" for w in report.warnings] + [""]
        else:
            out += [f"{len(report.warnings)} warnings: see the long form (`--long`) or the HTML report.", ""]
    if report.errors:
        out += ["## Errors", ""] + [f"- {e}" for e in report.errors] + [""]
    out += ["## Machine and versions", "", *_md(versions_table(report), numeric_from=99), ""]
    return out


def _hosts(report: Report, scenario: str, metrics: list[str] | None = None) -> list[str]:
    table = hosts_table(report, scenario, metrics)
    return [f"{HOSTS_NOTE}", "", *_md(table), ""] if table[1] else []


def render_md(report: Report) -> str:
    """The short report for a pull request (under 60,000 characters for a default run): the verdict,
    the claims, each scenario's headline metrics side by side, errors and the machine."""
    out = _head(report)
    out += ["## Details", "", intro(report), ""]
    for scenario in dict.fromkeys(r.scenario for r in report.rows):
        out += [f"### {scenario}", ""]
        out += [*_md(scenario_table(report, scenario, key_metrics(report, scenario))), ""]
        out += _hosts(report, scenario, key_metrics(report, scenario))
        slopes = slopes_table(report, scenario)
        fitted = [row for row in slopes[1] if row[2].endswith(("per layer", "per file", "per container"))]
        if fitted:
            out += [*_md((slopes[0], fitted)), ""]
    return "\n".join(out + _tail(report, warnings=False))


def render_md_long(report: Report) -> str:
    """The whole report: verdict, claims, then per scenario (folded) every metric, slopes and statistics."""
    out = _head(report)
    out += ["## Details", "", intro(report), ""]
    for scenario in dict.fromkeys(r.scenario for r in report.rows):
        out += [f"<details><summary><b>{scenario}</b></summary>", ""]
        description = report.document.scenarios.get(scenario, {}).get("description")
        if description:
            out += [" ".join(description.split()), ""]
        out += [*_md(scenario_table(report, scenario)), ""]
        out += _hosts(report, scenario)
        slopes = slopes_table(report, scenario)
        if slopes[1]:
            out += [SLOPES_NOTE, "", *_md(slopes), ""]
        out += ["Statistics:", ""]
        out += [*_md(stats_table(report, scenario), numeric_from=3), "", "</details>", ""]
    return "\n".join(out + _tail(report, warnings=True))
