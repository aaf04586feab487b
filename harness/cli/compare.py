"""`layerbench compare OLD NEW`: flag the metrics that changed beyond a ratio and the noise between runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from layerbench.analysis import results
from layerbench.analysis.compare import FORMATS, THRESHOLD, compare_runs, format_json, format_md, format_text

__all__ = ["compare_cmd"]


@click.command("compare")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option(
    "--old",
    "more_old",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Another run of the old code (repeatable): with several runs a side, runs are tested on their medians.",
)
@click.option(
    "--new",
    "more_new",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Another run of the new code (repeatable).",
)
@click.option(
    "--noise",
    "noise",
    multiple=True,
    nargs=2,
    type=click.Path(path_type=Path),
    metavar="A B",
    help="An A/A pair of this machine (two runs of the same code, repeatable): each timing's noise floor is "
    "the largest ratio its scenario's metric showed on its driver between them.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    default=THRESHOLD,
    show_default=True,
    help="Smallest ratio that counts: 0.10 flags a new median 10% above or below the old one.",
)
@click.option(
    "--fail-on",
    "fail_on",
    type=click.Choice(["worse"]),
    help="Exit 1 when any metric got worse after the correction for many comparisons, the noise between "
    "runs and a whole-machine shift (for CI gates).",
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
def compare_cmd(
    old: Path,
    new: Path,
    more_old: tuple[Path, ...],
    more_new: tuple[Path, ...],
    noise: tuple[tuple[Path, Path], ...],
    threshold: float,
    fail_on: str | None,
    show_all: bool,
    fmt: str,
) -> None:
    """Compare the results file NEW against OLD, cell by cell and metric by metric, and say how their
    machines differ."""
    olds = [results.read_document(p) for p in (old, *more_old)]
    news = [results.read_document(p) for p in (new, *more_new)]
    pairs = [(results.read_document(a), results.read_document(b)) for a, b in noise]
    comp = compare_runs(olds, news, threshold, pairs)
    render = {"text": format_text, "md": format_md, "json": format_json}[fmt]
    click.echo(render(comp, show_all), nl=False)
    if fail_on == "worse" and any(c.verdict == "worse" for c in comp.changes):
        sys.exit(1)
