"""layerbench's own report formats, as exporters (`exporter(report, out)`): each renders through its
module, imported when used, so `layerbench run` does not import plotly to print a table."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from layerbench.report.model import Report

if TYPE_CHECKING:
    from layerbench.plugins import ExporterRegistry

__all__ = ["register_exporters"]


def _table(report: Report) -> str:
    from layerbench.report.table import comparison_table

    return comparison_table(report.document)


def _md(report: Report) -> str:
    from layerbench.report.report_md import render_md

    return render_md(report)


def _md_long(report: Report) -> str:
    from layerbench.report.report_md import render_md_long

    return render_md_long(report)


def _html(report: Report) -> str:
    from layerbench.report.report_html import render_html

    return render_html(report)


def _csv(report: Report) -> str:
    from layerbench.report import render_csv

    return render_csv(report)


def _json(report: Report) -> str:
    from layerbench.report import render_json

    return render_json(report)


def _writer(render: Callable[[Report], str]) -> Callable[[Report, TextIO], None]:
    """The exporter (report, out) of a function that returns the text."""

    def export(report: Report, out: TextIO) -> None:
        out.write(render(report))

    export.__name__ = export.__qualname__ = render.__name__.lstrip("_")
    return export


def register_exporters(registry: ExporterRegistry) -> None:
    """The report formats: Markdown (short and long), HTML, the tidy CSV, JSON and the console table
    (registered by harness/builtin_plugins.py, layerbench's own plugin)."""
    registry.add(
        "md", _writer(_md), suffix=".md", description="Markdown for a pull request: verdict, claims, headline tables"
    )
    registry.add(
        "md-long",
        _writer(_md_long),
        suffix=".md",
        description="Markdown, everything: every metric, slopes and statistics (`-f md --long`)",
    )
    registry.add("html", _writer(_html), suffix=".html", description="a self-contained page with every plot")
    registry.add(
        "csv",
        _writer(_csv),
        suffix=".csv",
        description="the tidy CSV, a row per cell and metric (the same as `run --export-csv`)",
    )
    registry.add(
        "json",
        _writer(_json),
        suffix=".json",
        description="the report's data: runs, verdict, rows with ratios, slopes, claims",
    )
    registry.add("table", _writer(_table), suffix=".txt", description="the comparison table `layerbench run` prints")
