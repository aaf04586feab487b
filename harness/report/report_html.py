"""The report as one self-contained HTML page: inline CSS, interactive Plotly plots with plotly.js inlined once, no
network."""

from __future__ import annotations

from html import escape

from layerbench.report.model import Report
from layerbench.report.plots import Plot, figures, plotly_js
from layerbench.report.report_md import (
    HOSTS_NOTE,
    SLOPES_NOTE,
    MdTable,
    claims_table,
    hosts_table,
    intro,
    scenario_table,
    slopes_table,
    stats_table,
    versions_table,
)

__all__ = ["render_html"]

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1280px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.meta, p.desc, figcaption { color: #555; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e5e5; text-align: left; vertical-align: top; }
th { background: #f5f5f7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
details summary { cursor: pointer; color: #0a58ca; margin: 6px 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); grid-auto-flow: dense;
         gap: 24px; }
figure { margin: 0; }
figure.wide { grid-column: 1 / -1; }
figure .plotly-graph-div { border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 12px; margin: 8px 0; }
.warn li { color: #8a4b00; }
.err li { color: #b00020; }
td.held { color: #1b7f3b; font-weight: 600; }
td.did-not-hold { color: #b00020; font-weight: 600; }
td.not-measured { color: #777; }
table.verdict td.best { background: #e3f5e8; color: #1b7f3b; font-weight: 600; }
table.verdict th:first-child { text-align: left; }
nav.toc { margin: 8px 0 16px; }
nav.toc a { color: #0a58ca; text-decoration: none; }
details > summary h3 { display: inline; font-size: 18px; }
ul.advice li { margin: 3px 0; }
"""


#: a scenario opens when its anchor is followed (the table of contents, a link; `#open-all` opens
#: every one), and its plots, drawn while it was folded, take the width they now have
OPEN_SCRIPT = """
function openTarget() {
  if (location.hash === "#open-all") {
    document.querySelectorAll('details[id^="s-"]').forEach(d => { d.open = true; });
    return;
  }
  const d = location.hash && document.getElementById(location.hash.slice(1));
  if (d && d.tagName === "DETAILS") { d.open = true; d.scrollIntoView(); }
}
document.querySelectorAll("details").forEach(d => d.addEventListener("toggle", () => {
  if (d.open) d.querySelectorAll(".js-plotly-plot").forEach(p => Plotly.Plots.resize(p));
}));
window.addEventListener("hashchange", openTarget);
openTarget();
"""


def _table(table: MdTable, numeric_from: int = 2, verdict_col: int | None = None) -> str:
    header, body = table
    cls = lambda i: ' class="num"' if i >= numeric_from else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{escape(h)}</th>" for i, h in enumerate(header))
    rows = []
    for row in body:
        cells = []
        for i, value in enumerate(row):
            c = cls(i)
            if i == verdict_col:
                c = f' class="{escape(value.replace(" ", "-"))}"'
            cells.append(f"<td{c}>{escape(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _anchor(name: str) -> str:
    return "s-" + "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)


def _verdict(report: Report) -> list[str]:
    from layerbench.report.verdict import verdict_table

    shown = [(host, v) for host, v in report.verdicts if v.rows]
    if not shown:
        return []
    out = ['<h2 id="verdict">Verdict</h2>']
    for host, v in shown:
        header, body = verdict_table(v)
        best = {(i, j) for i, (_, _, cells) in enumerate(v.rows) for j, c in enumerate(cells) if c and c.best}
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        rows = []
        for i, row in enumerate(body):
            cells = [f"<th>{escape(row[0])}</th>"]
            cells += [f"<td{' class=best' if (i, j) in best else ''}>{escape(x)}</td>" for j, x in enumerate(row[1:])]
            rows.append("<tr>" + "".join(cells) + "</tr>")
        out += [f"<h3>Verdict on {escape(host)}</h3>"] if host else []
        out.append(f'<table class="verdict"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
        if v.advice:
            out += ["<ul class=advice>", *(f"<li>{escape(a)}</li>" for a in v.advice), "</ul>"]
    out.append(
        '<p class="desc">Medians; in brackets the ratio to the best driver (green). docs/reports.md, '
        '"The verdict", says which cell each row takes and the rules of the advice.</p>'
    )
    return out


def render_html(report: Report) -> str:
    """The whole report as one HTML document that needs nothing but itself: the verdict first, then the
    claims, then each scenario folded (its plots, tables and statistics), warnings, errors, machine."""
    scenarios = list(dict.fromkeys(r.scenario for r in report.rows))
    out = _head(report, scenarios)
    out += [f'<div class="note">{escape(n)}</div>' for n in report.notes]
    out += _verdict(report)
    if report.claims is not None:
        table = claims_table(report)
        out += ['<h2 id="claims">Claims</h2>', _table(table, numeric_from=99, verdict_col=table[0].index("verdict"))]
    plots = figures(report)
    out += ["<h2>Details</h2>", f'<p class="desc">{intro(report, lambda name: f"<b>{escape(name)}</b>")}</p>']
    for scenario in scenarios:
        out += _scenario(report, scenario, plots)
    if report.warnings:
        out += [
            '<h2 id="warnings">Warnings</h2><ul class="warn">',
            *(f"<li>{escape(w)}</li>" for w in report.warnings),
            "</ul>",
        ]
    if report.errors:
        out += ['<h2>Errors</h2><ul class="err">', *(f"<li>{escape(e)}</li>" for e in report.errors), "</ul>"]
    out += [
        '<h2 id="machine">Machine and versions</h2>',
        _table(versions_table(report), numeric_from=99),
        f"<script>{OPEN_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(out) + "\n"


def _head(report: Report, scenarios: list[str]) -> list[str]:
    """The page up to its table of contents: the head with CSS and plotly.js, the runs and how each measured."""
    runs = ", ".join(
        f"<code>{escape(r.label)}</code> ({escape(str(r.started_utc))}, {escape(str(r.machine.name))})"
        for r in report.runs
    )
    toc = ['<a href="#verdict">Verdict</a>'] if any(v.rows for _, v in report.verdicts) else []
    toc += ['<a href="#claims">Claims</a>'] if report.claims is not None else []
    toc += [f'<a href="#{_anchor(s)}">{escape(s)}</a>' for s in scenarios]
    toc += ['<a href="#warnings">Warnings</a>'] if report.warnings else []
    toc += ['<a href="#machine">Machine</a>']
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>layerbench report</title>",
        f"<style>{CSS}</style>",
        f'<script type="text/javascript">{plotly_js()}</script></head><body>',
        "<h1>layerbench report</h1>",
        f'<p class="meta">Runs: {runs}.</p>',
        *(f'<p class="meta"><code>{escape(r.label)}</code>: {escape(r.facts)}</p>' for r in report.runs if r.facts),
        f'<nav class="toc">{" · ".join(toc)}</nav>',
    ]


def _scenario(report: Report, scenario: str, plots: list[Plot]) -> list[str]:
    """One scenario, folded: its description, plots, table, the spread across hosts, slopes, statistics."""
    out = [f'<details id="{_anchor(scenario)}"><summary><h3>{escape(scenario)}</h3></summary>']
    description = report.document.scenarios.get(scenario, {}).get("description")
    if description:
        out.append(f'<p class="desc">{escape(" ".join(description.split()))}</p>')
    mine = [p for p in plots if p.scenario == scenario]
    if mine:
        out.append('<div class="plots">')
        for p in mine:
            wide = ' class="wide"' if p.wide else ""
            out.append(
                f"<figure{wide}>{p.html(f'plot{plots.index(p) + 1}')}"
                f"<figcaption><b>{escape(p.title)}.</b> {escape(p.caption)}</figcaption></figure>"
            )
        out.append("</div>")
    out.append(_table(scenario_table(report, scenario)))
    spread = hosts_table(report, scenario)
    if spread[1]:
        out += [f'<p class="desc">{escape(HOSTS_NOTE)}</p>', _table(spread)]
    slopes = slopes_table(report, scenario)
    if slopes[1]:
        out += [f'<p class="desc">{escape(SLOPES_NOTE)}</p>', _table(slopes)]
    return [
        *out,
        "<details><summary>Statistics</summary>",
        _table(stats_table(report, scenario), 3),
        "</details>",
        "</details>",
    ]
