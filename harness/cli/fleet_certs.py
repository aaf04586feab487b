"""`layerbench fleet-certs`: a fleet CA and a certificate per host (docs/fleet.md)."""

from __future__ import annotations

from pathlib import Path

import click

from layerbench.run.fleet_tls import DEFAULT_DAYS, make_fleet_certs

__all__ = ["fleet_certs_cmd"]


@click.command("fleet-certs")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    metavar="NAME",
    help="A machine of the fleet (scheduler, worker host, client): one certificate each (repeatable).",
)
@click.option("--days", type=click.IntRange(min=1), default=DEFAULT_DAYS, show_default=True, help="Validity.")
def fleet_certs_cmd(folder: Path, hosts: tuple[str, ...], days: int) -> None:
    """Make a fleet CA in FOLDER (or reuse the one there) and a certificate and key per --host.

    Copy ca.pem, NAME.pem and NAME-key.pem to each machine (the key only to its own machine);
    ca-key.pem signs new hosts and stays here.
    """
    for path in make_fleet_certs(folder, list(hosts), days):
        click.echo(f"made {path}")
