"""The `layerbench` command. One module per verb; each verb wraps one library call."""

from __future__ import annotations

import sys
from typing import Any

import click

from layerbench.cli.claims import claims_cmd
from layerbench.cli.cleanup import cleanup_cmd
from layerbench.cli.compare import compare_cmd
from layerbench.cli.drivers import drivers_cmd
from layerbench.cli.fleet_certs import fleet_certs_cmd
from layerbench.cli.listing import results_cmd
from layerbench.cli.plugins import plugins_cmd
from layerbench.cli.report import report_cmd
from layerbench.cli.run import EXIT_INTERRUPTED, run_cmd
from layerbench.cli.scenarios import scenarios_cmd
from layerbench.cli.scheduler import scheduler_cmd
from layerbench.cli.worker import worker_cmd
from layerbench.errors import UserError

__all__ = ["main"]


class _Group(click.Group):
    """Shows a UserError as one line and exits with its code (2), an interrupt with 130; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"layerbench: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("layerbench: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="layerbench")
def main() -> None:
    """Benchmark container-image storage drivers side by side on the real kernel."""


main.add_command(run_cmd)
main.add_command(drivers_cmd)
main.add_command(scenarios_cmd)
main.add_command(claims_cmd)
main.add_command(cleanup_cmd)
main.add_command(report_cmd)
main.add_command(compare_cmd)
main.add_command(results_cmd)
main.add_command(plugins_cmd)
main.add_command(worker_cmd)
main.add_command(scheduler_cmd)
main.add_command(fleet_certs_cmd)
