"""`layerbench drivers`: every driver, its style and whether it can run here."""

from __future__ import annotations

import json

import click

from ..plugins import default_plugins

__all__ = ["drivers_cmd", "driver_rows"]


def driver_rows() -> list[dict[str, str | bool | None]]:
    plugins = default_plugins()
    rows: list[dict[str, str | bool | None]] = []
    for name, cls in sorted(plugins.registry.drivers.items()):
        reason = cls.probe()
        rows.append({"name": name, "style": cls.style.value, "available": reason is None,
                     "reason": reason, "default": cls.in_default_run, "plugin": plugins.registry.origin[name]})
    return rows


@click.command("drivers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def drivers_cmd(as_json: bool) -> None:
    """List every driver with its style and whether it can run here (and if not, why)."""
    rows = driver_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(str(row["name"])) for row in rows), default=0)
    for row in rows:
        status = "available" if row["available"] else f"unavailable: {row['reason']}"
        default = "default" if row["default"] else ""
        click.echo(f"{row['name']:<{width}}  {row['style']:<9} {default:<8} {status}")
    for why in default_plugins().broken.values():
        click.echo(f"broken {why}", err=True)
