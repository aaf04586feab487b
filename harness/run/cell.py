"""One cell: a fresh store, the driver set up on it, the image built, the samples taken, all released.

Everything a cell makes is released in a `finally`, after errors, interrupts and its
time limit too; a failure is the cell's error, in one line, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbench.analysis.results_model import CellResult
from layerbench.driver import Driver
from layerbench.environment import RunEnvironment
from layerbench.images.image import Image, SyntheticImage, skipped_at_import
from layerbench.kernel import syscalls
from layerbench.run import backing, userns
from layerbench.run.builds import build_further_images, build_measured
from layerbench.run.estimates import estimate_bytes, estimate_inodes
from layerbench.run.ledger import Ledger
from layerbench.run.plan import Cell
from layerbench.run.recorder import CellRecorder
from layerbench.run.registry import Registries
from layerbench.run.sampling import Sampling, headline_widths, stop_reason
from layerbench.run.session import DriverSession
from layerbench.run.steps import SampleState, cell_registries, run_step, start_registries
from layerbench.run.teardown import Overlap
from layerbench.run.templates import Template, adopt
from layerbench.run.templates import warm as warm_page_cache
from layerbench.units import bytes_text

__all__ = ["CellTimeout", "measure_cell", "run_cell"]


class CellTimeout(Exception):
    """The cell ran past its time limit."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise CellTimeout in the running cell after `seconds` (0: no limit)."""
    if seconds <= 0:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise CellTimeout(f"the cell ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class _CellRun:
    """What measuring one cell needs, and where it puts what it measures."""

    cell: Cell
    session: DriverSession  # the driver on the cell's store, released by the teardown
    sampling: Sampling
    result: CellResult  # the cell's result, filled in as it runs
    recorder: CellRecorder
    started: float  # time.monotonic() when the cell began: its set-up runs from here to the first sample
    template: Template | None = None  # the store is a copy of this built one (harness/run/templates.py)
    overlap: Overlap | None = None  # the last cell's teardown, maybe still running: joined before the first sample
    waited_s: float = 0.0  # time spent joining it: that cell's, not this one's
    registries: Registries | None = None  # a rootless cell's, started outside its user namespace (steps.py)


@dataclass
class _Built:
    """The cell's image on its store, as every sample starts from it."""

    driver: Driver
    top: str
    base: backing.Usage  # the store's usage before the driver was set up
    base_walk: int
    tops: dict[str, str]  # image name -> its top layer: "base" and the pre-built further images
    contents: dict[str, bytes] | None  # the image's generated contents, when a build step rebuilds it
    unbuilt: dict[str, tuple[str | None, Image, dict[str, bytes] | None]]  # images build steps import


def _join_last_teardown(run: _CellRun) -> None:
    """Wait for the last cell's teardown (no teardown beside a sample), noting how long."""
    if run.overlap is not None:
        t0 = time.monotonic()
        run.overlap.wait()
        run.waited_s += time.monotonic() - t0


def _build(run: _CellRun) -> _Built:
    """Set the driver up on the open store and build the cell's images (or take its template's)."""
    cell, store, t, out = run.cell, run.session.store, run.template, run.result
    base, base_walk = (t.base, t.base_walk) if t else (store.usage(), backing.allocated_bytes(store.mountpoint))
    driver = run.session.start()
    image = cell.image
    if t is not None:  # the image is on the copied store: the driver learns its layers, the page cache gets them
        adopt(driver, t)
        top, per_layer = t.top, list(t.per_layer)
        warm_page_cache(store.mountpoint)
    else:
        top, per_layer = build_measured(image, driver, store, base.bytes)
        run.recorder.skip(skipped_at_import(image))
    run.recorder.add("image_disk_bytes", per_layer[-1])
    out.image_layers_disk_bytes = per_layer
    out.image_bytes = image.total_bytes
    _inspect(out)["image"] = driver.inspect(top)
    tops = {"base": top}
    if further := cell.images:
        out.images = build_further_images(further, driver, store, base.bytes, tops, image.total_bytes, per_layer[-1])
        for _, _, built in further:
            run.recorder.skip(skipped_at_import(built))
    rebuilt = any(x.op == "build" and "image" not in x.args for x in cell.steps)
    contents = image.contents() if isinstance(image, SyntheticImage) and rebuilt else None
    unbuilt = {  # imported by build steps, each sample anew; generated contents made here, untimed
        name: (base_name, img, img.contents() if isinstance(img, SyntheticImage) else None)
        for name, base_name, img in cell.unbuilt
    }
    return _Built(driver, top, base, base_walk, tops, contents, unbuilt)


def _sample(run: _CellRun, built: _Built, registries: Registries | None, rep: int) -> tuple[SampleState, float]:
    """Take sample `rep` (after dropping the page cache, for a cold cell): the state it made and its seconds."""
    if run.sampling.cold:
        syscalls.drop_caches()
    state = SampleState(
        built.driver,
        run.cell.image,
        built.top,
        run.session.store,
        built.base,
        built.base_walk,
        prefix=f"s{rep}",
        contents=built.contents,
        images=built.tops,
        unbuilt=built.unbuilt,
        registries=registries,
    )
    t0 = time.monotonic()
    try:
        for step in run.cell.steps:
            run_step(state, step, run.recorder.record, run.recorder.outcome)
    finally:
        run.recorder.skip(state.import_skipped)
    return state, time.monotonic() - t0


def _note_split(split: dict[str, float], timed_ns: int, loop_start: float) -> None:
    """The loop's time so far: its timed regions, and the rest of it (the samples' untimed work)."""
    split["timed"] = round(timed_ns / 1e9, 3)
    split["sampling"] = round(max(0.0, time.monotonic() - loop_start - timed_ns / 1e9), 3)


def _take_samples(run: _CellRun, built: _Built, registries: Registries | None) -> None:
    """The warm-up samples, then measured ones until `stop_reason` says; the time split kept up to date."""
    sampling, out, recorder = run.sampling, run.result, run.recorder
    rep, measured, spent = 0, 0, 0.0
    loop_start = time.monotonic()
    split = _split(out)
    split["setup"] = round(loop_start - run.started - run.waited_s, 3)
    while True:
        recorder.warm = rep < sampling.warmup
        if not recorder.warm:
            reason = stop_reason(sampling, measured, spent, time.monotonic() - loop_start, recorder.samples)
            if reason is not None:
                out.stop_reason = reason
                break
        state, took = _sample(run, built, registries, rep)
        if not recorder.warm:
            spent += took
            measured += 1
            if state.written:
                recorder.add("written_bytes", state.written)
            if state.containers and "container" not in _inspect(out):
                _inspect(out)["container"] = built.driver.inspect(state.containers[-1])
        # After a failure, the cleanup below releases what the sample left.
        state.release()
        rep += 1
        _note_split(split, recorder.timed_ns, loop_start)
        out.sample_count = measured
    _note_split(split, recorder.timed_ns, loop_start)
    if sampling.adaptive:
        widths = headline_widths(recorder.samples)
        out.ci_half_width = {m: round(w, 4) for m, w in widths.items() if w != float("inf")}


def _measure(run: _CellRun) -> None:
    """Set the driver up on the open store, build the image, take the samples; `run_cell` cleans up."""
    built = _build(run)
    # the registries `pull` steps start, one per link, stopped with the cell (run/registry.py); a rootless
    # cell's were started before its namespace, and its parent stops them
    store = run.session.store
    registries = run.registries or cell_registries(run.cell.steps, store.mountpoint.parent, store.ledger)
    try:
        _join_last_teardown(run)
        _take_samples(run, built, registries)
    finally:
        if registries is not None and run.registries is None:
            registries.close()


def _measure_in_userns(run: _CellRun) -> None:
    """`_measure` in an unprivileged user namespace (a rootless driver, docs/rootless.md).

    The store (root's loop mount) is handed to the namespace's user; a forked child
    builds the image and takes the samples, then closes its driver. What it recorded
    comes back, after an error too; the parent's own handle cleans up what is left.
    """
    _join_last_teardown(run)  # before the fork: the child has no teardown thread to wait for
    cell, store = run.cell, run.session.store
    registries = cell_registries(cell.steps, store.mountpoint.parent, store.ledger)
    try:
        spool = []
        if registries is not None:  # pulls run inside, their registries as root outside, as a remote one
            unbuilt = {name: image for name, _, image in cell.unbuilt}
            spool = [start_registries(registries, cell.steps, cell.image, unbuilt)]
        session = DriverSession(run.session.cls, store)
        _in_userns(run, dataclasses.replace(run, overlap=None, session=session, registries=registries), spool)
    finally:
        if registries is not None:
            registries.close()


def _in_userns(run: _CellRun, child: _CellRun, spool: list[Path]) -> None:
    """Hand the store (and `spool`, the pulls' directory) over; `child` measures in a forked child in the
    namespace, `run` keeps the parent's own handle on the driver and gets what the child measured."""
    userns.hand_over(run.session.store.mountpoint)
    run.session.start(setup=False)  # the parent's own handle on the driver

    def body() -> tuple[dict[str, Any], dict[str, Any], Exception | None]:  # plain data across the fork
        error: Exception | None = None
        try:
            _measure(child)
        except Exception as exc:  # noqa: BLE001  raised again in the parent, after the partial results
            error = exc
        finally:
            child.session.close_driver()
        return child.result.to_dict(), child.recorder.to_plain(), error

    cell = run.cell  # the OCI layouts its images are read from (under the 0700 work root) are reached too
    layouts = [getattr(img, "layout", None) for img in (cell.image, *(i for _, _, i in (*cell.images, *cell.unbuilt)))]
    expose = [run.session.store.mountpoint, *spool, *sorted({p for p in layouts if isinstance(p, Path)})]
    got, recorded, error = userns.run_in_userns(body, expose=expose)
    measured = CellResult.from_dict(got)
    for f in dataclasses.fields(CellResult):  # what the child filled in, in the parent's result
        if f.name != "order":
            setattr(run.result, f.name, getattr(measured, f.name))
    run.recorder.merge(recorded)
    if error is not None:
        raise error


def _new_result(cell: Cell, sampling: Sampling, template: Template | None) -> CellResult:
    """A cell's result as it starts: what it is, and nothing measured yet."""
    return CellResult(
        cell.scenario.name,
        cell.driver.name,
        cell.params,
        cell.backing,
        status="running",
        warmup=sampling.warmup,
        outcome_counts={},
        inspect={},
        time_split_s={"setup": 0.0, "timed": 0.0, "sampling": 0.0, "teardown": 0.0},
        template=template is not None,
    )


def _inspect(out: CellResult) -> dict[str, Any]:
    """The result's `inspect` (a running cell's has one)."""
    assert out.inspect is not None
    return out.inspect


def _split(out: CellResult) -> dict[str, float]:
    """The result's `time_split_s` (a running cell's has one)."""
    assert out.time_split_s is not None
    return out.time_split_s


def run_cell(
    cell: Cell,
    workdir: Path,
    sampling: Sampling | None = None,
    overhead_ns: int = 0,
    ledger: Ledger | None = None,
    template: Template | None = None,
    env: RunEnvironment | None = None,
) -> dict[str, Any]:
    """`measure_cell` without an overlapped teardown, for scripts and tests: the cell's JSON record, as the
    results file holds it (its teardown has ended)."""
    return measure_cell(cell, workdir, sampling, overhead_ns, ledger, template, env=env).to_dict()


def measure_cell(
    cell: Cell,
    workdir: Path,
    sampling: Sampling | None = None,
    overhead_ns: int = 0,
    ledger: Ledger | None = None,
    template: Template | None = None,
    overlap: Overlap | None = None,
    spent_s: float = 0.0,
    released: Callable[[CellResult], None] | None = None,
    env: RunEnvironment | None = None,
) -> CellResult:
    """Run one cell in `workdir` (created and removed here) and return its result; with `template`,
    on a copy of that built store instead of a new one. With `overlap`, the cell waits for the last
    cell's teardown before its first sample and hands its own teardown to it: the result's
    `teardown` and `duration_s` are filled in when that ends (harness/run/teardown.py). `spent_s`: set-up
    done for this cell before the call (its family's template build), counted in its set-up.
    `released` gets the result once the teardown has ended, on the calling thread. `env`: the run's
    environment (harness/environment.py; the caller has it `applied` for the images it opens)."""
    sampling = sampling or Sampling(*cell.scenario.repeat(cell.params), cold=False)
    out = _new_result(cell, sampling, template)
    started = time.monotonic() - spent_s
    size = (template.size_bytes, template.inodes) if template else (estimate_bytes(cell), estimate_inodes(cell))
    session = DriverSession.new(
        cell.driver,
        workdir,
        cell.backing,
        *size,
        ledger=ledger,
        template=template.image if template else None,
        loop_io=(env or RunEnvironment()).loop_io,
        own_workdir=True,  # in its run directory, never through a symlink
    )
    run = _CellRun(cell, session, sampling, out, CellRecorder(overhead_ns), started, template, overlap)
    try:
        with _time_limit(sampling.timeout_s):
            session.open_store()
            out.loop_direct_io = session.store.direct_io
            out.mkfs_options = backing.mkfs_options(cell.backing)  # alike on every store of this backing
            (_measure_in_userns if cell.driver.userns else _measure)(run)
        out.status = "ok"
    except KeyboardInterrupt:
        out.status, out.error = "interrupted", "interrupted"
        raise
    except Exception as exc:  # noqa: BLE001  any failure is this cell's error; the run goes on
        out.status, out.error = "error", _error_text(cell, exc, session.store)
    finally:
        _end(run, released)
    return out


def _end(run: _CellRun, released: Callable[[CellResult], None] | None) -> None:
    """The cell's figures, once its samples have ended; then its teardown, now or beside the next cell's
    set-up (`overlap`), after which `released` gets the result."""
    out, recorder = run.result, run.recorder
    measured_until = time.monotonic()
    started = run.started + run.waited_s
    out.metrics = recorder.metrics()
    out.outcome_counts = recorder.outcome_counts()
    out.skipped_at_import = recorder.skipped_at_import()
    split = _split(out)
    if not split["setup"]:  # the cell failed before its first sample: all of it was set-up
        split["setup"] = round(measured_until - started, 3)
    out.duration_s = round(measured_until - started, 3)  # and the teardown, once it has ended
    teardown = functools.partial(_teardown, run, started, measured_until)
    then = None if released is None else functools.partial(released, out)
    if run.overlap is None or out.status == "interrupted":
        teardown()
        if then is not None and out.status != "interrupted":
            then()
    else:
        run.overlap.submit(teardown, then)


def _teardown(run: _CellRun, started: float, measured_until: float) -> None:
    """Release everything the cell made; a failure is its error (on the teardown thread: not the next cell's)."""
    out = run.result
    try:
        run.session.close(unmount_home=True)
    except Exception as exc:  # noqa: BLE001  this cell's error, not the next one's
        if out.status != "error":
            out.status, out.error = "error", f"{run.cell.describe()}: teardown: {type(exc).__name__}: {exc}"
    finally:
        ended = time.monotonic()
        _split(out)["teardown"] = round(ended - measured_until, 3)
        out.duration_s = round(ended - started, 3)


def _error_text(cell: Cell, exc: Exception, store: backing.BackingStore) -> str:
    """A cell's error in one line: the step that failed (if one did), and for a full store the estimate."""
    where = "".join(f"{note}: " for note in getattr(exc, "__notes__", ()))
    raw = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        if cell.backing == "dir":
            return f"{cell.describe()}: {where}no space left on the disk under the work root ({raw})"
        return (
            f"{cell.describe()}: {where}no space left on the store (estimate {bytes_text(store.size_bytes)}); "
            f"the disk estimate missed what this cell writes, please report it ({raw})"
        )
    return where + raw
