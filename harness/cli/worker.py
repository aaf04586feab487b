"""`layerbench worker`: serve one host of a fleet to a Dask scheduler (docs/fleet.md)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

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
@click.option("--listen-host", metavar="ADDRESS", help="The address the worker listens on (default: Dask's).")
def worker_cmd(scheduler: str, work_root: Path, host: str, listen_host: str | None) -> None:
    """Serve this host to the Dask scheduler at SCHEDULER: one worker, one thread, one cell at a time.

    Runs as root (cells mount file systems); stop it with Ctrl-C or SIGTERM.
    """
    if os.geteuid() != 0:
        raise UserError("layerbench worker runs cells that mount file systems and make loop devices: run it as root")
    if not re.match(r"^[A-Za-z0-9._-]+$", host):
        raise UserError(f"--name {host!r}: use letters, digits, '.', '_' and '-' only")
    from layerbench.run.fleet import HOST_ENV, WORK_ROOT_ENV, describe_host, require_dask, serve_worker

    require_dask()
    root = safety.prepare_work_root(work_root)
    os.environ.update({HOST_ENV: host, WORK_ROOT_ENV: str(root)})
    desc = describe_host(())
    click.echo(f"host {host}: {json.dumps(desc['machine'])}", err=True)
    for name, reason in desc["drivers"].items():
        if reason is not None:
            click.echo(f"host {host}: cannot run driver {name}: {reason}", err=True)
    click.echo(f"host {host}: serving {scheduler} with work root {root}", err=True)
    serve_worker(scheduler, host, root, listen_host)
