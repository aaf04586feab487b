"""The report as one self-contained HTML page: inline CSS, plots as base64 PNG, no network."""

from __future__ import annotations

from html import escape

from .plots import figures
from .report import Report
from .report_md import (
    SLOPES_NOTE,
    MdTable,
    claims_table,
    intro,
    scenario_table,
    slopes_table,
    stats_table,
    versions_table,
)

__all__ = ["html_page"]

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
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); grid-auto-flow: dense; gap: 24px; }
figure { margin: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 12px; margin: 8px 0; }
.warn li { color: #8a4b00; }
.err li { color: #b00020; }
td.held { color: #1b7f3b; font-weight: 600; }
td.did-not-hold { color: #b00020; font-weight: 600; }
td.not-measured { color: #777; }
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


def html_page(report: Report) -> str:
    """The whole report as one HTML document that needs nothing but itself."""
    runs = ", ".join(f"<code>{escape(r['label'])}</code> ({escape(str(r['started_utc']))}, "
                     f"{escape(str(r['machine'].get('name')))})" for r in report.runs)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>layerbench report</title>", f"<style>{CSS}</style></head><body>",
           "<h1>layerbench report</h1>", f'<p class="meta">Runs: {runs}. {intro(report)}</p>']
    out += [f'<div class="note">{escape(n)}</div>' for n in report.notes]
    plots = figures(report)
    if plots:
        out.append("<h2>Plots</h2><div class=\"plots\">")
        for p in plots:
            wide = ' class="wide"' if p.wide else ""
            out.append(f'<figure{wide}><img alt="{escape(p.title)}" src="{p.data_uri}">'
                       f"<figcaption><b>{escape(p.title)}.</b> {escape(p.caption)}</figcaption></figure>")
        out.append("</div>")
    if report.claims is not None:
        out += ["<h2>Claims</h2>", _table(claims_table(report), numeric_from=3, verdict_col=1)]
    for scenario in dict.fromkeys(r["scenario"] for r in report.rows):
        out.append(f"<h2>{escape(scenario)}</h2>")
        description = report.doc["scenarios"].get(scenario, {}).get("description")
        if description:
            out.append(f'<p class="desc">{escape(" ".join(description.split()))}</p>')
        out.append(_table(scenario_table(report, scenario)))
        slopes = slopes_table(report, scenario)
        if slopes[1]:
            out += [f'<p class="desc">{escape(SLOPES_NOTE)}</p>', _table(slopes)]
        out += ["<details><summary>Statistics</summary>", _table(stats_table(report, scenario), 3), "</details>"]
    if report.warnings:
        out += ['<h2>Warnings</h2><ul class="warn">', *(f"<li>{escape(w)}</li>" for w in report.warnings), "</ul>"]
    if report.errors:
        out += ['<h2>Errors</h2><ul class="err">', *(f"<li>{escape(e)}</li>" for e in report.errors), "</ul>"]
    out += ["<h2>Machine and versions</h2>", _table(versions_table(report), numeric_from=99), "</body></html>"]
    return "\n".join(out) + "\n"
