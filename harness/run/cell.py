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
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbench.analysis import results
from layerbench.driver import Driver
from layerbench.environment import RunEnvironment
from layerbench.images.build import layer_ids
from layerbench.images.image import SyntheticImage
from layerbench.images.oci import cache_root
from layerbench.kernel import safety, syscalls
from layerbench.run import backing, userns
from layerbench.run.builds import build_further_images, build_measured
from layerbench.run.estimates import estimate_bytes, estimate_inodes
from layerbench.run.ledger import Ledger
from layerbench.run.plan import Cell
from layerbench.run.registry import Registries
from layerbench.run.sampling import Sampling, headline_widths, stop_reason
from layerbench.run.steps import SampleState, run_step
from layerbench.run.teardown import Overlap
from layerbench.run.templates import Template, adopt, let_go
from layerbench.run.templates import warm as warm_page_cache
from layerbench.units import bytes_text

__all__ = ["CellTimeout", "run_cell", "build_template"]


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
    store: backing.BackingStore
    home: Path
    sampling: Sampling
    overhead_ns: int
    out: dict[str, Any]
    recorded: dict[str, list[int]]
    outcomes: dict[str, dict[str, int]]
    drivers: list[Driver]  # the driver once set up, so the caller can close it
    started: float  # time.monotonic() when the cell began: its set-up runs from here to the first sample
    template: Template | None = None  # the store is a copy of this built one (harness/run/templates.py)
    overlap: Overlap | None = None  # the last cell's teardown, maybe still running: joined before the first sample
    waited_s: list[float] = field(default_factory=list)  # time spent joining it: that cell's, not this one's


def _join_last_teardown(run: _CellRun) -> None:
    """Wait for the last cell's teardown (no teardown beside a sample), noting how long."""
    if run.overlap is not None:
        t0 = time.monotonic()
        run.overlap.wait()
        run.waited_s.append(time.monotonic() - t0)


def _measure(run: _CellRun) -> None:
    """Set the driver up in `home` on the open store, build the image, take the samples; `run_cell` cleans up."""
    cell, store, home, sampling, overhead_ns = run.cell, run.store, run.home, run.sampling, run.overhead_ns
    out, recorded, outcomes = run.out, run.recorded, run.outcomes
    mnt = store.mountpoint
    t = run.template
    base, base_walk = (t.base, t.base_walk) if t else (store.usage(), backing.allocated_bytes(mnt))
    driver = cell.driver(home)
    driver.ledger = store.ledger
    run.drivers.append(driver)
    driver.setup()
    image = cell.image
    if t is not None:  # the image is on the copied store: the driver learns its layers, the page cache gets them
        adopt(driver, t)
        top, per_layer = t.top, list(t.per_layer)
        warm_page_cache(mnt)
    else:
        top, per_layer = build_measured(image, driver, store, base.bytes)
    recorded["image_disk_bytes"].append(per_layer[-1])
    out["image_layers_disk_bytes"] = per_layer
    out["image_bytes"] = image.total_bytes
    out["inspect"]["image"] = driver.inspect(top)
    tops = {"base": top}
    if further := cell.images:
        out["images"] = build_further_images(further, driver, store, base.bytes, tops, image.total_bytes, per_layer[-1])
    steps = cell.steps
    rebuilt = any(x.op == "build" and "image" not in x.args for x in steps)
    contents = image.contents() if isinstance(image, SyntheticImage) and rebuilt else None
    unbuilt = {  # imported by build steps, each sample anew; generated contents made here, untimed
        name: (base_name, img, img.contents() if isinstance(img, SyntheticImage) else None)
        for name, base_name, img in cell.unbuilt
    }

    timed_ns = 0  # the measured samples' timed regions, as taken (before the timer overhead comes off)

    def keep(metric: str, value: int) -> None:
        nonlocal timed_ns
        if metric.endswith("_ns"):
            timed_ns += value
        recorded[metric].append(max(0, value - overhead_ns) if metric.endswith("_ns") else value)

    def drop(metric: str, value: int) -> None:
        pass

    def outcome(label: str, name: str) -> None:
        outcomes[label][name] += 1

    registries = (  # the registries `pull` steps start, one per link, stopped with the cell (run/registry.py)
        Registries(store.mountpoint.parent, cache_root() / "registry-storage", store.ledger)
        if any(x.op == "pull" for x in steps)
        else None
    )
    try:
        _join_last_teardown(run)
        rep, measured, spent = 0, 0, 0.0
        loop_start = time.monotonic()
        split = out["time_split_s"]
        split["setup"] = round(loop_start - run.started - sum(run.waited_s), 3)

        def note_split() -> None:
            split["timed"] = round(timed_ns / 1e9, 3)
            split["sampling"] = round(max(0.0, time.monotonic() - loop_start - timed_ns / 1e9), 3)

        while True:
            warm = rep < sampling.warmup
            if not warm:
                reason = stop_reason(sampling, measured, spent, time.monotonic() - loop_start, recorded)
                if reason is not None:
                    out["stop_reason"] = reason
                    break
            if sampling.cold:
                syscalls.drop_caches()
            state = SampleState(
                driver,
                image,
                top,
                store,
                base,
                base_walk,
                prefix=f"s{rep}",
                contents=contents,
                images=tops,
                unbuilt=unbuilt,
                registries=registries,
            )
            t0 = time.monotonic()
            for step in steps:
                run_step(state, step, drop if warm else keep, outcome)
            if not warm:
                spent += time.monotonic() - t0
                measured += 1
                if state.written:
                    recorded["written_bytes"].append(state.written)
                if state.containers and "container" not in out["inspect"]:
                    out["inspect"]["container"] = driver.inspect(state.containers[-1])
            # After a failure, the cleanup below releases what the sample left.
            state.release()
            rep += 1
            note_split()
            out["samples"] = measured
        note_split()
        if sampling.adaptive:
            out["ci_half_width"] = {m: round(w, 4) for m, w in headline_widths(recorded).items() if w != float("inf")}
    finally:
        if registries is not None:
            registries.close()


def _measure_in_userns(run: _CellRun) -> None:
    """`_measure` in an unprivileged user namespace (a rootless driver, docs/rootless.md).

    The store (root's loop mount) is handed to the namespace's user; a forked child
    builds the image and takes the samples, then closes its driver. What it recorded
    comes back, after an error too; the parent's own handle cleans up what is left.
    """
    _join_last_teardown(run)  # before the fork: the child has no teardown thread to wait for
    run = dataclasses.replace(run, overlap=None)
    userns.hand_over(run.store.mountpoint)
    run.drivers.append(run.cell.driver(run.home))
    out, recorded, outcomes = run.out, run.recorded, run.outcomes

    def body() -> tuple[dict[str, Any], dict[str, list[int]], dict[str, dict[str, int]], Exception | None]:
        own: list[Driver] = []
        error: Exception | None = None
        try:
            _measure(dataclasses.replace(run, drivers=own))
        except Exception as exc:  # noqa: BLE001  raised again in the parent, after the partial results
            error = exc
        finally:
            for driver in own:
                driver.close()
        return out, dict(recorded), {k: dict(v) for k, v in outcomes.items()}, error

    cell = run.cell  # the OCI layouts its images are read from (under the 0700 work root) are reached too
    layouts = [getattr(img, "layout", None) for img in (cell.image, *(i for _, _, i in (*cell.images, *cell.unbuilt)))]
    expose = [run.store.mountpoint, *sorted({p for p in layouts if isinstance(p, Path)})]
    got, got_recorded, got_outcomes, error = userns.run_in_userns(body, expose=expose)
    out.update(got)
    recorded.update(got_recorded)
    for label, counts in got_outcomes.items():
        outcomes[label].update(counts)
    if error is not None:
        raise error


def run_cell(
    cell: Cell,
    workdir: Path,
    sampling: Sampling | None = None,
    overhead_ns: int = 0,
    ledger: Ledger | None = None,
    template: Template | None = None,
    overlap: Overlap | None = None,
    spent_s: float = 0.0,
    released: Callable[[dict[str, Any]], None] | None = None,
    env: RunEnvironment | None = None,
) -> dict[str, Any]:
    """Run one cell in `workdir` (created and removed here) and return its result; with `template`,
    on a copy of that built store instead of a new one. With `overlap`, the cell waits for the last
    cell's teardown before its first sample and hands its own teardown to it: the result's
    `teardown` and `duration_s` are filled in when that ends (harness/run/teardown.py). `spent_s`: set-up
    done for this cell before the call (its family's template build), counted in its set-up.
    `released` gets the result once the teardown has ended, on the calling thread. `env`: the run's
    environment (harness/environment.py; the caller has it `applied` for the images it opens)."""
    s = cell.scenario
    sampling = sampling or Sampling(*s.repeat(cell.params), cold=False)
    loop_io = (env or RunEnvironment()).loop_io
    out: dict[str, Any] = {
        "scenario": s.name,
        "driver": cell.driver.name,
        "params": cell.params,
        "backing": cell.backing,
        "status": "running",
        "error": None,
        "warmup": sampling.warmup,
        "metrics": {},
        "outcomes": {},
        "inspect": {},
        "time_split_s": {"setup": 0.0, "timed": 0.0, "sampling": 0.0, "teardown": 0.0},
    }
    recorded: dict[str, list[int]] = defaultdict(list)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    started = time.monotonic() - spent_s
    if ledger is not None:
        ledger.made("dir", workdir)
    safety.make_dir(workdir)  # in its run directory, never through a symlink
    if template is not None:
        store = backing.BackingStore(
            workdir, cell.backing, template.size_bytes, template.inodes, ledger, template.image, loop_io=loop_io
        )
    else:
        store = backing.BackingStore(
            workdir, cell.backing, estimate_bytes(cell), estimate_inodes(cell), ledger, loop_io=loop_io
        )
    out["template"] = template is not None
    drivers: list[Driver] = []  # the driver, once set up, for the cleanup below
    waited: list[float] = []  # joining the last cell's teardown: its time, not this cell's
    try:
        with _time_limit(sampling.timeout_s):
            home = store.open() / cell.driver.name
            out["loop_direct_io"] = store.direct_io
            out["mkfs_options"] = backing.mkfs_options(cell.backing)  # alike on every store of this backing
            if template is None:
                home.mkdir(mode=0o700, parents=True)  # an engine driver's name has a slash: containerd/native
            measure = _measure_in_userns if cell.driver.userns else _measure
            run = _CellRun(
                cell, store, home, sampling, overhead_ns, out, recorded, outcomes, drivers, started, waited_s=waited
            )
            measure(dataclasses.replace(run, template=template, overlap=overlap))
        out["status"] = "ok"
    except KeyboardInterrupt:
        out["status"] = "interrupted"
        out["error"] = "interrupted"
        raise
    except Exception as exc:  # noqa: BLE001  any failure is this cell's error; the run goes on
        out["status"] = "error"
        out["error"] = _error_text(cell, exc, store)
    finally:
        measured_until = time.monotonic()
        started += sum(waited)
        out["metrics"] = {m: {"unit": results.unit_of(m), "samples": v} for m, v in recorded.items()}
        out["outcomes"] = {k: dict(v) for k, v in outcomes.items()}
        split = out["time_split_s"]
        if not split["setup"]:  # the cell failed before its first sample: all of it was set-up
            split["setup"] = round(measured_until - started, 3)
        out["duration_s"] = round(measured_until - started, 3)  # and the teardown, once it has ended

        def teardown() -> None:
            try:
                _release(store, drivers, workdir, ledger, below=store.mountpoint / cell.driver.name)
            except Exception as exc:  # noqa: BLE001  on the teardown thread: this cell's error, not the next one's
                if out["status"] != "error":
                    out["status"], out["error"] = "error", f"{cell.describe()}: teardown: {type(exc).__name__}: {exc}"
            finally:
                ended = time.monotonic()
                split["teardown"] = round(ended - measured_until, 3)
                out["duration_s"] = round(ended - started, 3)

        then = None if released is None else functools.partial(released, out)
        if overlap is None or out["status"] == "interrupted":
            teardown()
            if then is not None and out["status"] != "interrupted":
                then()
        else:
            overlap.submit(teardown, then)
    return out


def _release(
    store: backing.BackingStore, drivers: list[Driver], workdir: Path, ledger: Ledger | None, below: Path | None = None
) -> None:
    """Release a cell's resources, after errors too: mounts below `below`, the drivers, the store, `workdir`."""
    try:
        if below is not None:
            syscalls.unmount_below(str(below))
        for driver in drivers:
            driver.close()
    finally:
        store.close()
        safety.remove_tree(workdir)
        if ledger is not None:
            ledger.released("dir", workdir)


def build_template(
    cell: Cell,
    workdir: Path,
    size_bytes: int,
    inodes: int,
    ledger: Ledger | None = None,
    env: RunEnvironment | None = None,
) -> Template:
    """Build the cell's image on a fresh store in `workdir` as `_measure` does, and keep its
    backing file, cleanly unmounted, as its family's template (harness/run/templates.py)."""
    if ledger is not None:
        ledger.made("dir", workdir)
    safety.make_dir(workdir)  # in its run directory, never through a symlink
    store = backing.BackingStore(
        workdir, cell.backing, size_bytes, inodes, ledger, loop_io=(env or RunEnvironment()).loop_io
    )
    driver: Driver | None = None
    try:
        home = store.open() / cell.driver.name
        home.mkdir(mode=0o700, parents=True)
        base, base_walk = store.usage(), backing.allocated_bytes(store.mountpoint)
        driver = cell.driver(home)
        driver.ledger = ledger
        driver.setup()
        image, ids = cell.image, layer_ids(cell.image)
        top, per_layer = build_measured(image, driver, store, base.bytes)
        template = Template(
            store.image,
            store.size_bytes,
            inodes,
            base,
            base_walk,
            top,
            per_layer,
            [(layer, ids[i - 1] if i else None) for i, layer in enumerate(ids)],
            image.total_bytes,
            driver.inspect(top),
        )
        let_go(driver)
        driver = None
        store.close(keep_file=True)
        return template
    except BaseException:
        _release(store, [driver] if driver is not None else [], workdir, ledger)
        raise


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
