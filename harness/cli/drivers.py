"""`layerbench drivers`: every driver, its style and whether it can run here."""

from __future__ import annotations

import json
import sys

import click

from layerbench.plugins import default_plugins

__all__ = ["drivers_cmd", "driver_rows"]

#: drivers that measure no storage: the null driver (the harness's own overhead) and the plugin template
TEST_ONLY = frozenset({"null", "skeleton"})


def driver_rows() -> list[dict[str, str | bool | None]]:
    plugins = default_plugins()
    rows: list[dict[str, str | bool | None]] = []
    for name, cls in sorted(plugins.registry.drivers.items()):
        reason = cls.probe()
        origin = plugins.registry.origin[name]
        rows.append(
            {
                "name": name,
                "style": cls.style.value,
                "available": reason is None,
                "reason": reason,
                "default": cls.in_default_run,
                "plugin": origin,
                "mechanism": _mechanism(cls),
                "test_only": name in TEST_ONLY or "test" in str(origin).lower(),
            }
        )
    return rows


def _mechanism(cls: type) -> str:
    """The first line of the driver module's docstring, without the leading `name:`."""
    doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().splitlines()
    first = doc[0] if doc else ""
    return first.split(": ", 1)[1] if ": " in first[:40] else first


@click.command("drivers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def drivers_cmd(as_json: bool) -> None:
    """List every driver with its style and whether it can run here (and if not, why)."""
    rows = driver_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [["name", "style", "in default run", "mechanism", "available here"]]
    for row in rows:
        status = "yes" if row["available"] else f"no: {row['reason']}"
        name = f"{row['name']} (test only)" if row["test_only"] else str(row["name"])
        table.append([name, str(row["style"]), "yes" if row["default"] else "", str(row["mechanism"]), status])
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for i, r in enumerate(table):
        click.echo("  ".join(x.ljust(w) for x, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
        if i == 0:
            click.echo("  ".join("-" * w for w in widths) + "  " + "-" * len(r[4]))
    for why in default_plugins().broken.values():
        click.echo(f"broken {why}", err=True)
