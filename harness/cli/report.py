"""`layerbench report`: result files in a registered format: Markdown, a self-contained HTML page, CSV, JSON,
the console table, or one a plugin adds (`layerbench plugins` lists them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from layerbench.analysis import results
from layerbench.errors import UserError
from layerbench.kernel import safety
from layerbench.plugins import default_plugins
from layerbench.report import DEFAULT_BASELINE, build, read_all, render

__all__ = ["report_cmd", "expand_paths", "format_of_suffix"]

#: file name endings people use for a format besides the one its exporter declares
_SUFFIX_ALIASES = {".htm": "html", ".markdown": "md"}


class _Formats(click.Choice):
    """The registered exporters' names, looked up when the option is used (plugins load on first use)."""

    def __init__(self) -> None:
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        return tuple(default_plugins().exporters.items)

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        pass


def expand_paths(paths: tuple[Path, ...]) -> list[Path]:
    """Files as given; a directory stands for every results file under it."""
    return results.result_paths(paths)


def format_of_suffix(output: str) -> str:
    """The format an output file's name ends in: the first exporter declaring that suffix (`.md`: md)."""
    suffix = Path(output).suffix.lower()
    exporters = default_plugins().exporters
    found = _SUFFIX_ALIASES.get(suffix) or next((n for n, s in exporters.suffix.items() if s and s == suffix), None)
    if found is None:
        raise UserError(
            f"-o {output}: cannot tell the format from the suffix; pass --format (one of {', '.join(exporters.items)})"
        )
    return found


@click.command("report")
@click.argument("results_files", nargs=-1, required=True, metavar="RESULTS...", type=click.Path(path_type=Path))
@click.option(
    "-f",
    "--format",
    "fmt",
    type=_Formats(),
    help="Output format, built in or a plugin's (default: from the -o suffix, else md).",
)
@click.option("-o", "--output", default="-", metavar="FILE", help="Write here instead of stdout.")
@click.option(
    "--baseline", default=DEFAULT_BASELINE, show_default=True, help="Driver the others' ratios are relative to."
)
@click.option(
    "--short/--long",
    "short",
    default=True,
    show_default=True,
    help="Markdown: the short form for a pull request (verdict, claims, headline tables; "
    "under 60,000 characters for a default run) or everything (md-long).",
)
def report_cmd(results_files: tuple[Path, ...], fmt: str | None, output: str, baseline: str, short: bool) -> None:
    """Turn RESULTS (files or directories) into tables, plots and the claims check."""
    if fmt is None:
        fmt = format_of_suffix(output) if output != "-" else "md"
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
