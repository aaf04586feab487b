"""`layerbench scheduler`: a fleet's scheduler, closed by default (docs/fleet.md)."""

from __future__ import annotations

from pathlib import Path

import click

from layerbench.cli.fleet_options import tls_options

__all__ = ["scheduler_cmd"]


@click.command("scheduler")
@click.option(
    "--host",
    "listen_address",
    metavar="ADDRESS",
    help="The address it listens on (default: 127.0.0.1, this machine only).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8786, show_default=True, help="0: any free port.")
@click.option(
    "--address-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the address it serves (tls://HOST:PORT) to this file once it listens.",
)
@tls_options
def scheduler_cmd(
    listen_address: str | None,
    port: int,
    address_file: Path | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Serve a fleet's Dask scheduler: mutual TLS only, no dashboard; Ctrl-C or SIGTERM stops it.

    Needs no root: run it as an ordinary user, on any machine the client and the hosts reach.
    """
    from layerbench.kernel import safety
    from layerbench.run.fleet import require_dask
    from layerbench.run.fleet_services import listen_host, serve_scheduler
    from layerbench.run.fleet_tls import FleetTLS

    require_dask()
    tls = FleetTLS.from_options(tls_ca, tls_cert, tls_key, "layerbench scheduler")
    host = listen_host(listen_address, "--host")
    if address_file is not None:
        safety.check_output_file(address_file, "--address-file")
    serve_scheduler(host, port, tls, lambda line: click.echo(line, err=True), address_file)
