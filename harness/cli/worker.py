"""`layerbench worker`: serve one host of a fleet to its scheduler (docs/fleet.md)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from layerbench.cli.fleet_options import tls_options
from layerbench.errors import UserError
from layerbench.kernel import safety
from layerbench.run.machine import machine_name

__all__ = ["worker_cmd"]


@click.command("worker")
@click.argument("scheduler")
@click.option(
    "--work-root",
    type=click.Path(path_type=Path),
    required=True,
    help="Where this host's cells make their stores: a directory of layerbench's own.",
)
@click.option(
    "--name",
    "host",
    default=machine_name,
    show_default="the host name",
    help="The host's name in results, and its Dask worker's name.",
)
@click.option(
    "--listen-address",
    "--listen-host",
    "listen_address",
    metavar="ADDRESS",
    help="The address the worker listens on (default: 127.0.0.1, this machine only).",
)
@click.option(
    "--reconnect-timeout",
    "reconnect_timeout_s",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    metavar="SECONDS",
    help="When the scheduler goes, keep trying to reach it this long before giving up.",
)
@tls_options
def worker_cmd(
    scheduler: str,
    work_root: Path,
    host: str,
    listen_address: str | None,
    reconnect_timeout_s: float,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Serve this host to the fleet's scheduler at SCHEDULER (tls://HOST:PORT): one cell at a time.

    Runs as root (cells mount file systems) and runs what the scheduler sends, so it speaks only
    mutual TLS. Stop it with Ctrl-C or SIGTERM.
    """
    if os.geteuid() != 0:
        raise UserError("layerbench worker runs cells that mount file systems and make loop devices: run it as root")
    if not re.match(r"^[A-Za-z0-9._-]+$", host):
        raise UserError(f"--name {host!r}: use letters, digits, '.', '_' and '-' only")
    from layerbench.run.fleet import describe_host, require_dask
    from layerbench.run.fleet_services import HOST_ENV, WORK_ROOT_ENV, listen_host, serve_worker
    from layerbench.run.fleet_tls import FleetTLS, tls_address

    require_dask()
    scheduler = tls_address(scheduler, "SCHEDULER")
    tls = FleetTLS.from_options(tls_ca, tls_cert, tls_key, "layerbench worker")
    listen = listen_host(listen_address, "--listen-address")
    root = safety.prepare_work_root(work_root)
    os.environ.update({HOST_ENV: host, WORK_ROOT_ENV: str(root)})
    desc = describe_host(())
    click.echo(f"host {host}: {json.dumps(desc['machine'])}", err=True)
    for name, reason in desc["drivers"].items():
        if reason is not None:
            click.echo(f"host {host}: cannot run driver {name}: {reason}", err=True)
    click.echo(f"host {host}: serving {scheduler} from tls://{listen} with work root {root}", err=True)
    serve_worker(scheduler, host, root, tls, listen, lambda line: click.echo(line, err=True), reconnect_timeout_s)
