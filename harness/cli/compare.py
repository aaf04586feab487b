"""`layerbench compare OLD NEW`: flag the metrics that changed significantly and beyond a ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import results
from ..compare import compare, format_changes

__all__ = ["compare_cmd"]


@click.command("compare")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(min=0), default=0.10, show_default=True,
              help="Smallest ratio that counts: 0.10 flags a new median 10% above or below the old one.")
@click.option("--fail-on", "fail_on", type=click.Choice(["worse"]),
              help="Exit 1 when any metric got worse (for CI gates).")
@click.option("--all", "show_all", is_flag=True, help="List unchanged metrics too.")
def compare_cmd(old: Path, new: Path, threshold: float, fail_on: str | None, show_all: bool) -> None:
    """Compare the results file NEW against OLD, cell by cell and metric by metric."""
    changes, notes = compare(results.read(old), results.read(new), threshold)
    click.echo(format_changes(changes, notes, threshold, show_all), nl=False)
    if fail_on == "worse" and any(c.verdict == "worse" for c in changes):
        sys.exit(1)
