"""`layerbench results`: the saved runs, oldest first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from layerbench.analysis import results
from layerbench.errors import UserError

__all__ = ["results_cmd", "list_runs"]


def list_runs(results_dir: Path) -> list[dict[str, Any]]:
    """One row per results file under `results_dir`; a file that cannot be read says why, a run
    whose process is gone is `died`."""
    if not results_dir.is_dir():
        raise UserError(f"{results_dir}: no such results directory (pass --results-dir)")
    rows = []
    for path in sorted(p for p in results_dir.rglob("*.json") if not p.name.startswith(".")):
        try:
            run = results.read_document(path)
        except UserError as exc:
            rows.append(
                {
                    "date": "",
                    "label": "",
                    "machine": "",
                    "scenarios": "",
                    "drivers": "",
                    "status": f"unreadable: {exc}".replace(f"{path}: ", ""),
                    "path": str(path),
                }
            )
            continue
        drivers = dict.fromkeys(c.driver for c in run.cells) or run.drivers
        rows.append(
            {
                "date": run.started_utc,
                "label": run.label,
                "machine": run.machine.name or "",
                "scenarios": ",".join(run.scenarios),
                "drivers": ",".join(drivers),
                "status": results.run_state(run),
                "path": str(path),
            }
        )
    return sorted(rows, key=lambda r: (not r["date"], r["date"], r["path"]))


@click.command("results")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def results_cmd(results_dir: Path, as_json: bool) -> None:
    """List the saved runs: date, label, machine, scenarios, drivers, status and file."""
    rows = list_runs(results_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no results files under {results_dir}", err=True)
        return
    keys = ["date", "label", "machine", "scenarios", "drivers", "status", "path"]
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys[:-1]}
    click.echo("  ".join(k.ljust(widths[k]) for k in keys[:-1]) + "  path")
    for r in rows:
        click.echo("  ".join(str(r[k]).ljust(widths[k]) for k in keys[:-1]) + f"  {r['path']}")
