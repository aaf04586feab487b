"""`layerbench report`: result files as Markdown, a self-contained HTML page, CSV or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from .. import results, safety
from ..errors import UserError
from ..report import DEFAULT_BASELINE, FORMATS, build, read_all, render

__all__ = ["report_cmd", "expand_paths"]


def expand_paths(paths: tuple[Path, ...]) -> list[Path]:
    """Files as given; a directory stands for every results file under it."""
    return results.result_paths(paths)


@click.command("report")
@click.argument("results_files", nargs=-1, required=True, metavar="RESULTS...", type=click.Path(path_type=Path))
@click.option("-f", "--format", "fmt", type=click.Choice(FORMATS),
              help="Output format (default: from the -o suffix, else md).")
@click.option("-o", "--output", default="-", metavar="FILE", help="Write here instead of stdout.")
@click.option("--baseline", default=DEFAULT_BASELINE, show_default=True,
              help="Driver the others' ratios are relative to.")
@click.option("--short/--long", "short", default=True, show_default=True,
              help="Markdown: the short form for a pull request (verdict, claims, headline tables; "
                   "under 60,000 characters for a default run) or everything.")
def report_cmd(results_files: tuple[Path, ...], fmt: str | None, output: str, baseline: str, short: bool) -> None:
    """Turn RESULTS (files or directories) into tables, plots and the claims check."""
    if fmt is None:
        suffix = Path(output).suffix.lstrip(".").lower()
        fmt = {"htm": "html", "markdown": "md"}.get(suffix, suffix) if output != "-" else "md"
        if fmt not in FORMATS:
            raise UserError(f"-o {output}: cannot tell the format from the suffix; pass --format")
    if output != "-":
        safety.check_output_file(Path(output), "-o")
    text = render(build(read_all(expand_paths(results_files)), baseline), fmt, long=not short)
    if output == "-":
        click.echo(text, nl=False)
    else:
        try:
            Path(output).write_text(text)
        except OSError as exc:
            raise UserError(f"-o {output}: {exc.strerror}") from None
        click.echo(f"report: {output}", err=True)
