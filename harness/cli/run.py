"""`layerbench run`: run scenarios on drivers and print the comparison."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from layerbench.analysis import results
from layerbench.analysis.results_model import CellResult, RunDocument, cell_result
from layerbench.cli.fleet_options import tls_options
from layerbench.environment import applied
from layerbench.errors import RunStopped, UserError
from layerbench.kernel import safety
from layerbench.report import build, render
from layerbench.report.table import comparison_table, run_summary, run_warnings, several_hosts
from layerbench.run.config import Flag, RunConfig, parse_param
from layerbench.run.plan import Plan, plan
from layerbench.run.progress import duration_text, live_progress
from layerbench.run.runner import run_results, sigterm_as_interrupt
from layerbench.run.sampling import time_split_lines
from layerbench.units import human, params_human

if TYPE_CHECKING:
    from layerbench.run.fleet_tls import FleetTLS

__all__ = [
    "run_cmd",
    "setting_options",
    "parse_param",
    "plan_text",
    "failure_summary",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
]

#: `layerbench run` exits 0 when every cell ran, EXIT_FAILED when one failed, 2 on bad input (UserError),
#: EXIT_INTERRUPTED on Ctrl-C or SIGTERM (README.md, "Exit codes")
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def _click_type(flag: Flag) -> Any:
    if flag.choices:
        return click.Choice(list(flag.choices))
    if flag.type is Path:
        return click.Path(path_type=Path, exists=flag.exists, dir_okay=not flag.exists)
    if flag.type in (int, float) and flag.low is None and flag.high is None:
        return flag.type
    if flag.type is int:
        return click.IntRange(
            min=None if flag.low is None else int(flag.low), max=None if flag.high is None else int(flag.high)
        )
    if flag.type is float:
        return click.FloatRange(min=flag.low, max=flag.high)
    return None


def setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The argument and options of every run setting, declared from its `RunConfig` field
    (harness/run/config.py), in the field order; each passes its value under the field's name."""
    for f in reversed(dataclasses.fields(RunConfig)):
        flag: Flag | None = f.metadata["flag"]
        if flag is None:
            continue
        if flag.kind == "argument":
            command = click.argument(f.name, nargs=-1)(command)
            continue
        kwargs: dict[str, Any] = {"help": flag.help or None, "metavar": flag.metavar, "show_default": flag.show_default}
        if flag.kind == "many":
            kwargs.update(multiple=True, type=_click_type(flag))
        elif flag.kind == "flag":
            kwargs.update(is_flag=True)
        else:
            kwargs.update(type=_click_type(flag), default=f.default)
        command = click.option(*flag.decls, f.name, **kwargs)(command)
    return command


@click.command("run")
@setting_options
@click.option(  # not a setting of a run: how many runs
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Run the suite N times, one results file each (LABEL-r1 ...): `compare` tests several runs a side "
    "on their medians, the noise between runs included.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Run the cells on the hosts of the fleet whose scheduler is at ADDRESS, tls://HOST:PORT (docs/fleet.md).",
)
@tls_options
@click.option(
    "--export-csv",
    "export_csv",
    metavar="FILE",
    help="Also write the tidy summary table as CSV, as `report -f csv` does ('-' for stdout).",
)
@click.option(
    "--dry-run",
    "dry_run",
    is_flag=True,
    help="Print the plan (cells, estimated disk and time) and exit; nothing is made or run.",
)
def run_cmd(
    repeat: int,
    cluster: str | None,
    export_csv: str | None,
    dry_run: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    **settings: Any,
) -> None:
    """Run SCENARIOS (built-in names or .toml paths; default: every built-in one)."""
    config = RunConfig.from_options(settings)
    if repeat > 1 and (config.resume or dry_run or cluster):
        flag = "--resume" if config.resume else "--dry-run" if dry_run else "--cluster"
        raise UserError(f"--repeat runs the suite again here; it does not take {flag}")
    if config.quick and config.long:
        raise UserError("--quick and --long: the quick suite has no long sweeps; pick one")
    if export_csv and export_csv != "-":
        safety.check_output_file(Path(export_csv), "--export-csv")
    spread, resume, work_root = config.spread, config.resume, config.work_root
    if config.retry_failed and not resume:
        raise UserError("--retry-failed runs a run's failed cells again: pass --resume FILE too")
    if spread and not cluster:
        raise UserError("--spread spreads cells over a fleet's hosts: pass --cluster ADDRESS too")
    if dry_run:
        if resume or cluster:
            raise UserError(f"--dry-run plans a new run here; it does not take {'--resume' if resume else '--cluster'}")
        root = work_root or safety.DEFAULT_WORK_ROOT
        with applied(dataclasses.replace(config.environment(root), planning=True)):  # builds no image
            planned = plan(config)
        click.echo(plan_text(planned, root), nl=False)
        return
    tls = None
    if cluster:
        from layerbench.run.fleet import require_dask
        from layerbench.run.fleet_tls import FleetTLS, tls_address

        require_dask()
        cluster = tls_address(cluster, "--cluster")
        tls = FleetTLS.from_options(tls_ca, tls_cert, tls_key, "--cluster")
    elif tls_ca or tls_cert or tls_key:
        raise UserError("--tls-ca, --tls-cert and --tls-key are the fleet's: pass --cluster ADDRESS too")
    paths, label = [], config.label
    for n in range(1, repeat + 1):
        if repeat > 1:
            config = dataclasses.replace(config, label=f"{label}-r{n}")
            click.echo(f"run {n} of {repeat}", err=True)
        try:
            with sigterm_as_interrupt():
                doc, path, elapsed_s = _run(config, cluster, tls)
        except KeyboardInterrupt:
            click.echo("layerbench: interrupted; finished cells are kept in the results file", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except RunStopped as exc:
            where = exc.results_path
            kept = f"; the run is kept, interrupted: finish it with --resume {where}" if where else ""
            click.echo(f"layerbench: {exc}{kept}", err=True)
            sys.exit(EXIT_FAILED)
        paths.append(path)
    if repeat > 1:
        click.echo(f"{repeat} runs: {' '.join(map(str, paths))}", err=True)
    click.echo(comparison_table(doc))
    for line in run_warnings(doc):
        click.echo(f"warning: {line}", err=True)
    for line in time_split_lines(doc):
        click.echo(line, err=True)
    click.echo(f"results: {path}", err=True)
    click.echo(run_summary(doc, path, elapsed_s))  # the verdict last: what the terminal still shows
    if export_csv:
        text = render(build([doc], with_claims=False), "csv")  # the CSV exporter, as `report -f csv`
        if export_csv == "-":
            click.echo(text, nl=False)
        else:
            try:
                Path(export_csv).write_text(text)
            except OSError as exc:
                raise UserError(f"--export-csv {export_csv}: {exc.strerror}") from None
    failed = [c for c in doc.cells if c.status == "error"]
    if failed:
        click.echo(failure_summary(failed, len(doc.cells), several_hosts(doc)), err=True)
        sys.exit(EXIT_FAILED)


def _run(config: RunConfig, cluster: str | None, tls: FleetTLS | None = None) -> tuple[RunDocument, Path, float | None]:
    """Here, with a live bar on a terminal and plain lines elsewhere (harness/run/progress.py), or on the
    hosts of the Dask cluster at `cluster` (harness/run/fleet.py); the document, its path, and the time taken."""
    if cluster is not None and tls is not None:
        from layerbench.run.fleet import run_fleet_results

        return *run_fleet_results(config, cluster, tls, progress=lambda line: click.echo(line, err=True)), None
    live = live_progress()
    try:
        return *run_results(config, progress=live.line, events=live.event), live.clock.elapsed_s()
    finally:
        live.close()


def plan_text(p: Plan, work_root: Path) -> str:
    """The plan as a table, cell by cell, then the totals: the largest store against the free disk, the time."""
    header = ("scenario", "driver", "params", "backing", "disk (est.)", "time (past runs here)")
    rows = [
        (
            pc.cell.scenario.name,
            pc.cell.driver.name,
            params_human(results.params_text(pc.cell.params)),
            pc.cell.backing,
            "image not built" if pc.disk_bytes is None else human(pc.disk_bytes, "bytes"),
            "unknown" if pc.seconds is None else duration_text(pc.seconds),
        )
        for pc in p.cells
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(x.rjust(w) if i >= 4 else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in (header, tuple("-" * w for w in widths), *rows)
    ]
    where = next(d for d in (work_root, *work_root.parents) if d.exists())
    known = [pc.seconds for pc in p.cells if pc.seconds is not None]
    unknown = len(p.cells) - len(known)
    took = f"about {duration_text(sum(known))}" if known else "unknown"
    if known and unknown:
        took += f" for the {len(known)} cells that ran here before; {unknown} unknown (never ran here)"
    sizes = [pc.disk_bytes for pc in p.cells if pc.disk_bytes is not None]
    largest = f"the largest store needs {human(max(sizes), 'bytes')} of disk" if sizes else "their disk is unknown"
    free = human(shutil.disk_usage(where).free, "bytes")
    lines += ["", f"{len(p.cells)} cells; {largest} ({free} free under {where})"]
    if unbuilt := len(p.cells) - len(sizes):
        lines.append(f"{unbuilt} cells' images are built on the first run (not now): their disk is known then")
    lines += [
        f"time: {took}; from {p.history} results file{'s' * (p.history != 1)} of this machine",
    ]
    lines += [f"skipping driver {name}: {reason}" for name, reason in p.skipped.items()]
    lines.append("nothing was made or run (--dry-run)")
    return "\n".join(lines) + "\n"


def failure_summary(failed: Sequence[CellResult | Mapping[str, Any]], total: int, several_hosts: bool = False) -> str:
    """`2 of 6 cells failed: copy-up overlay2 file_size=4096 on ext4; ...`, the first ten named (with
    ` @ host` when the run had several hosts)."""
    named = [cell_result(c).name(host=several_hosts, params_first=True) for c in failed[:10]]
    more = f"; and {len(failed) - 10} more (layerbench report lists them)" if len(failed) > 10 else ""
    return f"layerbench: {len(failed)} of {total} cells failed: " + "; ".join(named) + more
