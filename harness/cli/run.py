"""`layerbench run`: run scenarios on drivers and print the comparison."""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from layerbench.analysis import results
from layerbench.errors import UserError
from layerbench.images.image_sources import parse_size
from layerbench.kernel import safety
from layerbench.report import build, render
from layerbench.report.table import comparison_table, host_suffix, run_summary, run_warnings, several_hosts
from layerbench.run.plan import Plan, RunConfig, plan
from layerbench.run.progress import duration_text, live_progress
from layerbench.run.runner import run, sigterm_as_interrupt
from layerbench.run.sampling import time_split_lines
from layerbench.units import human, params_human

__all__ = ["run_cmd", "parse_param", "plan_text", "failure_summary", "EXIT_FAILED", "EXIT_INTERRUPTED"]

#: `layerbench run` exits 0 when every cell ran, EXIT_FAILED when one failed, 2 on bad input (UserError),
#: EXIT_INTERRUPTED on Ctrl-C or SIGTERM (README.md, "Exit codes")
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def parse_param(text: str) -> tuple[str, list[int | str]]:
    """`name=1,2,3` -> ("name", [1, 2, 3]); values that are not whole numbers stay strings."""
    m = re.match(r"^([a-z_][a-z0-9_]*)=([A-Za-z0-9_.-]+(?:,[A-Za-z0-9_.-]+)*)$", text)
    if not m:
        raise UserError(f"--param {text!r}: expected name=value or name=v1,v2 (whole numbers or words)")
    return m.group(1), [int(v) if v.isdigit() else v for v in m.group(2).split(",")]


@click.command("run")
@click.argument("scenarios", nargs=-1)
@click.option(
    "-d",
    "--driver",
    "drivers",
    multiple=True,
    metavar="NAME",
    help="Driver to run (repeatable; 'all' for every driver but null). "
    "Default: overlay2, btrfs and vfs, where they can run.",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=V[,V...]",
    help="Override a swept parameter of every scenario that has it.",
)
@click.option(
    "-b",
    "--backing",
    "backings",
    multiple=True,
    type=click.Choice(["ext4", "xfs", "btrfs", "dir"]),
    help="Backing filesystem (repeatable: a sweep). Default: each driver's first usable one.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    help="Exactly this many samples per cell (default: until sure, --target-ci).",
)
@click.option("--warmup", type=click.IntRange(min=0), help="Warm-up samples per cell (default: the scenario's).")
@click.option(
    "--min-time",
    "min_time_s",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Keep sampling each cell until its samples took this long (default: the scenario's).",
)
@click.option(
    "--target-ci",
    "target_ci",
    type=click.FloatRange(min=0, max=1),
    default=0.05,
    show_default=True,
    metavar="FRACTION",
    help="Sample each cell until every timing metric's 95% CI is within +-FRACTION "
    "of its median (0: the scenario's exact counts; docs/performance.md).",
)
@click.option(
    "--min-samples",
    "min_samples",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="With --target-ci: samples a cell takes at least (at most the scenario's own count).",
)
@click.option(
    "--max-samples",
    "max_samples",
    type=click.IntRange(min=1),
    help="With --target-ci: samples a cell takes at most (default: the scenario's count, so a cell "
    "only ends early, once sure).",
)
@click.option(
    "--cell-budget",
    "cell_budget_s",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="With --target-ci: stop sampling a cell after this long (0: no limit).",
)
@click.option(
    "--templates/--no-templates",
    default=False,
    show_default=True,
    help="Build each image once per driver and backing, and start its cells from copies of that store "
    "(pays where a build costs more than a copy: many files; docs/performance.md).",
)
@click.option(
    "--overlap-teardown/--no-overlap-teardown",
    default=False,
    show_default=True,
    help="Tear each cell down on a thread while the next one sets up; it ends before the next sample "
    "(gains where set-up and teardown do not share the cores and disk; docs/performance.md).",
)
@click.option("--quick", is_flag=True, help="The quick suite: each scenario's [quick] values and samples.")
@click.option("--cold", is_flag=True, help="Sync and drop the page cache before every sample (root).")
@click.option(
    "--order",
    type=click.Choice(["random", "planned"]),
    default="random",
    show_default=True,
    help="Cell order: seeded random, or scenario x driver x parameters as planned.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random cell order.")
@click.option("--label", default="run", show_default=True, help="Label in the results file name.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Run the suite N times, one results file each (LABEL-r1 ...): `compare` tests several runs a side "
    "on their medians, the noise between runs included.",
)
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option(
    "--work-root",
    type=click.Path(path_type=Path),
    help="Where backing stores are made: a directory of layerbench's own (default: /var/tmp/layerbench).",
)
@click.option(
    "--cell-timeout",
    "cell_timeout_s",
    type=click.FloatRange(min=0),
    default=1800,
    show_default=True,
    metavar="SECONDS",
    help="Fail a cell that runs longer, release it, and go on (0: no limit).",
)
@click.option(
    "--max-image-bytes",
    "max_image_bytes",
    metavar="SIZE",
    help="Refuse an imported image larger than SIZE uncompressed (500M, 10G; default: the free disk).",
)
@click.option(
    "--loop-io",
    type=click.Choice(["direct", "buffered"]),
    default="direct",
    show_default=True,
    help="Loop devices of the stores: direct I/O (a store behaves like a disk), or buffered through the "
    "host page cache (a second copy of every page; only to measure what direct I/O changes).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    metavar="RESULT",
    help="Finish an interrupted run: same settings, finished cells kept, the rest run.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Run the cells on the hosts of the Dask cluster whose scheduler is at ADDRESS (docs/fleet.md).",
)
@click.option("--spread", is_flag=True, help="With --cluster: each cell once on any host, not on every host.")
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
    scenarios: tuple[str, ...],
    drivers: tuple[str, ...],
    params: tuple[str, ...],
    backings: tuple[str, ...],
    samples: int | None,
    warmup: int | None,
    min_time_s: float | None,
    quick: bool,
    cold: bool,
    order: str,
    seed: int,
    label: str,
    results_dir: Path,
    work_root: Path | None,
    cell_timeout_s: float,
    resume: Path | None,
    cluster: str | None,
    spread: bool,
    export_csv: str | None,
    max_image_bytes: str | None = None,
    target_ci: float = 0.05,
    min_samples: int = 5,
    max_samples: int | None = None,
    cell_budget_s: float = 0.0,
    templates: bool = False,
    overlap_teardown: bool = False,
    dry_run: bool = False,
    loop_io: str = "direct",
    repeat: int = 1,
) -> None:
    """Run SCENARIOS (built-in names or .toml paths; default: every built-in one)."""
    if not re.match(r"^[A-Za-z0-9._-]+$", label):
        raise UserError(f"--label {label!r}: use letters, digits, '.', '_' and '-' only")
    if repeat > 1 and (resume or dry_run or cluster):
        flag = "--resume" if resume else "--dry-run" if dry_run else "--cluster"
        raise UserError(f"--repeat runs the suite again here; it does not take {flag}")
    if export_csv and export_csv != "-":
        safety.check_output_file(Path(export_csv), "--export-csv")
    config = RunConfig(
        scenarios=scenarios,
        drivers=drivers,
        backings=backings,
        results_dir=results_dir,
        label=label,
        work_root=work_root,
        samples=samples,
        warmup=warmup,
        min_time_s=min_time_s,
        quick=quick,
        cold=cold,
        order=order,
        seed=seed,
        cell_timeout_s=cell_timeout_s,
        resume=resume,
        overrides=dict(parse_param(p) for p in params),
        spread=spread,
        max_image_bytes=None if max_image_bytes is None else parse_size(max_image_bytes),
        target_ci=target_ci,
        min_samples=min_samples,
        max_samples=max_samples,
        cell_budget_s=cell_budget_s,
        templates=templates,
        overlap_teardown=overlap_teardown,
        loop_io=loop_io,
    )
    if spread and not cluster:
        raise UserError("--spread spreads cells over a fleet's hosts: pass --cluster ADDRESS too")
    if dry_run:
        if resume or cluster:
            raise UserError(f"--dry-run plans a new run here; it does not take {'--resume' if resume else '--cluster'}")
        click.echo(plan_text(plan(config), work_root or safety.DEFAULT_WORK_ROOT), nl=False)
        return
    if cluster:
        from layerbench.run.fleet import require_dask

        require_dask()
    paths = []
    for n in range(1, repeat + 1):
        if repeat > 1:
            config = dataclasses.replace(config, label=f"{label}-r{n}")
            click.echo(f"run {n} of {repeat}", err=True)
        try:
            with sigterm_as_interrupt():
                doc, path, elapsed_s = _run(config, cluster)
        except KeyboardInterrupt:
            click.echo("layerbench: interrupted; finished cells are kept in the results file", err=True)
            sys.exit(EXIT_INTERRUPTED)
        paths.append(path)
    if repeat > 1:
        click.echo(f"{repeat} runs: {' '.join(map(str, paths))}", err=True)
    click.echo(comparison_table(doc))
    for line in run_warnings(doc):
        click.echo(f"warning: {line}", err=True)
    click.echo(run_summary(doc, path, elapsed_s))
    for line in time_split_lines(doc):
        click.echo(line, err=True)
    click.echo(f"results: {path}", err=True)
    if export_csv:
        text = render(build([doc], with_claims=False), "csv")  # the CSV exporter, as `report -f csv`
        if export_csv == "-":
            click.echo(text, nl=False)
        else:
            try:
                Path(export_csv).write_text(text)
            except OSError as exc:
                raise UserError(f"--export-csv {export_csv}: {exc.strerror}") from None
    failed = [c for c in doc["cells"] if c["status"] == "error"]
    if failed:
        click.echo(failure_summary(failed, len(doc["cells"]), several_hosts(doc)), err=True)
        sys.exit(EXIT_FAILED)


def _run(config: RunConfig, cluster: str | None) -> tuple[dict[str, Any], Path, float | None]:
    """Here, with a live bar on a terminal and plain lines elsewhere (harness/run/progress.py), or on the
    hosts of the Dask cluster at `cluster` (harness/run/fleet.py); the document, its path, and the time taken."""
    if cluster is not None:
        from layerbench.run.fleet import run_fleet

        return *run_fleet(config, cluster, progress=lambda line: click.echo(line, err=True)), None
    live = live_progress()
    try:
        return *run(config, progress=live.line, events=live.event), live.clock.elapsed_s()
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
            human(pc.disk_bytes, "bytes"),
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
    largest, free = human(max(pc.disk_bytes for pc in p.cells), "bytes"), human(shutil.disk_usage(where).free, "bytes")
    lines += [
        "",
        f"{len(p.cells)} cells; the largest store needs {largest} of disk ({free} free under {where})",
        f"time: {took}; from {p.history} results file{'s' * (p.history != 1)} of this machine",
    ]
    lines += [f"skipping driver {name}: {reason}" for name, reason in p.skipped.items()]
    lines.append("nothing was made or run (--dry-run)")
    return "\n".join(lines) + "\n"


def failure_summary(failed: list[dict[str, Any]], total: int, several_hosts: bool = False) -> str:
    """`2 of 6 cells failed: copy-up overlay2 file_size=4096 on ext4; ...`, the first ten named (with
    ` @ host` when the run had several hosts)."""
    named = [
        f"{c['scenario']} {c['driver']}"
        + (f" {results.params_text(c['params'])}" if c["params"] else "")
        + f" on {c['backing']}"
        + host_suffix(c, several_hosts)
        for c in failed[:10]
    ]
    more = f"; and {len(failed) - 10} more (layerbench report lists them)" if len(failed) > 10 else ""
    return f"layerbench: {len(failed)} of {total} cells failed: " + "; ".join(named) + more
