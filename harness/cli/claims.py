"""`layerbench claims`: the claims about image layers, checked against saved runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from layerbench.analysis import results
from layerbench.analysis.claims import claims_text, evaluate

__all__ = ["claims_cmd"]


@click.command("claims")
@click.argument("result_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def claims_cmd(result_files: tuple[Path, ...], as_json: bool) -> None:
    """Check each claim (held / did not hold / not measured) on RESULT_FILES, with its figures."""
    for path in result_files:
        run = results.read_document(path)
        if as_json:
            click.echo(json.dumps({"file": str(path), "claims": evaluate(run)}, indent=2))
        else:
            click.echo(f"{path}\n{claims_text(run)}")
