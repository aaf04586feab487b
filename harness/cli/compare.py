"""`layerbench compare OLD NEW`: flag the metrics that changed significantly and beyond a ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from layerbench.analysis import results
from layerbench.analysis.compare import FORMATS, compare_runs, format_json, format_md, format_text

__all__ = ["compare_cmd"]


@click.command("compare")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    default=0.10,
    show_default=True,
    help="Smallest ratio that counts: 0.10 flags a new median 10% above or below the old one.",
)
@click.option(
    "--fail-on",
    "fail_on",
    type=click.Choice(["worse"]),
    help="Exit 1 when any metric got worse after the correction for many comparisons and for a "
    "whole-machine shift (for CI gates).",
)
@click.option("--all", "show_all", is_flag=True, help="List unchanged metrics too.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for a terminal, md for a CI comment, json for tools.",
)
def compare_cmd(old: Path, new: Path, threshold: float, fail_on: str | None, show_all: bool, fmt: str) -> None:
    """Compare the results file NEW against OLD, cell by cell and metric by metric, and say how their
    machines differ."""
    comp = compare_runs(results.read(old), results.read(new), threshold)
    render = {"text": format_text, "md": format_md, "json": format_json}[fmt]
    click.echo(render(comp, show_all), nl=False)
    if fail_on == "worse" and any(c.verdict == "worse" for c in comp.changes):
        sys.exit(1)
