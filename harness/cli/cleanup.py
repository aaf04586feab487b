"""`layerbench cleanup`: release what killed runs left behind (mounts, loop devices, files, daemons, and a
namespace of ours on a user's containerd)."""

from __future__ import annotations

from pathlib import Path

import click

from layerbench.drivers._containerd_namespace import LEDGER_KIND, release_entry
from layerbench.kernel.safety import DEFAULT_WORK_ROOT
from layerbench.run.ledger import release_abandoned

__all__ = ["cleanup_cmd"]


@click.command("cleanup")
@click.option(
    "--work-root",
    type=click.Path(path_type=Path),
    default=DEFAULT_WORK_ROOT,
    show_default=True,
    help="The work root the runs used.",
)
def cleanup_cmd(work_root: Path) -> None:
    """Release everything runs that died (SIGKILL, power loss) recorded and left: unmount
    top-down, detach loop devices, remove files, stop daemons, empty and delete a namespace of ours on a
    user's containerd (--containerd-address). Idempotent; touches nothing unrecorded; skips runs still alive."""
    if not work_root.is_dir():
        click.echo(f"nothing to clean: {work_root} does not exist")
        return
    actions, live = release_abandoned(work_root, {LEDGER_KIND: release_entry})
    for line in actions:
        click.echo(line)
    for run_dir in live:
        click.echo(f"skipped {run_dir}: its run is still going")
    if not actions and not live:
        click.echo(f"nothing to clean under {work_root}")
