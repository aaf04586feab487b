"""The runner: plans cells, checks the disk, runs each cell on a fresh store, saves results.

A cell is one scenario x one driver x one parameter set x one backing filesystem.
It makes its own backing store and driver home and releases both, after errors
and interrupts too. Cells run in a seeded random order; the results file is
rewritten after every cell.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import random
import shutil
import signal
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from layerbench.analysis import results
from layerbench.driver import Driver, Style
from layerbench.errors import UserError
from layerbench.images.image import Image, SyntheticImage
from layerbench.images.image_sources import set_image_limit
from layerbench.images.oci import set_layout_cache
from layerbench.kernel import safety, syscalls
from layerbench.plugins import Plugins, default_plugins
from layerbench.run import backing, machine, overhead, userns
from layerbench.run.ledger import LEDGER_NAME, Ledger
from layerbench.run.progress import CellEvent, CellEvents
from layerbench.run.sampling import Sampling, headline_widths, stop_reason
from layerbench.run.steps import SampleState, run_step
from layerbench.run.templates import Template, Templates, adopt, let_go
from layerbench.run.templates import warm as warm_page_cache
from layerbench.scenario import Scenario, Step, builtin_scenarios, load_scenario, resolve_scenarios
from layerbench.units import bytes_text

__all__ = [
    "Cell",
    "RunConfig",
    "plan_cells",
    "estimate_bytes",
    "estimate_inodes",
    "run_cell",
    "run",
    "select_drivers",
    "sigterm_as_interrupt",
    "Plan",
    "PlannedCell",
    "plan",
]

_MiB = 1 << 20


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    driver: type[Driver]
    params: dict[str, Any]
    backing: str
    host: str | None = None  # a fleet's host it runs on (harness/run/fleet.py); None: here, or any host

    def describe(self) -> str:
        p = results.params_text(self.params)
        where = f" on {self.backing}" + (f" @{self.host}" if self.host else "")
        return f"{self.scenario.name} {self.driver.name}" + (f" {p}" if p else "") + where

    def to_plain(self) -> dict[str, Any]:
        """The cell as plain data, to run it in another process or on another host."""
        s = self.scenario
        return {
            "scenario": s.path,
            "name": s.name,
            "sha256": s.sha256,
            "overrides": s.overrides,
            "driver": self.driver.name,
            "params": self.params,
            "backing": self.backing,
            "host": self.host,
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any], plugins: Plugins) -> Cell:
        """The cell `to_plain` described, with this host's copy of its scenario file (refused if it differs)."""
        path = Path(data["scenario"])
        if not path.exists() and data["name"] in builtin_scenarios():
            path = builtin_scenarios()[data["name"]]  # a built-in installed elsewhere on this host
        scenario = load_scenario(path, data["overrides"])
        if scenario.sha256 != data["sha256"]:
            raise UserError(f"{path}: scenario {data['name']!r} differs from the one the run planned (sha256)")
        return cls(scenario, plugins.driver(data["driver"]), data["params"], data["backing"], data["host"])


@dataclass
class RunConfig:
    scenarios: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    backings: tuple[str, ...] = ()
    results_dir: Path = Path("results")
    label: str = "run"
    work_root: Path | None = None
    samples: int | None = None
    warmup: int | None = None
    min_time_s: float | None = None
    cold: bool = False
    order: str = "random"
    seed: int = 0
    cell_timeout_s: float = 1800.0
    quick: bool = False
    resume: Path | None = None
    overrides: dict[str, list[Any]] = field(default_factory=dict)
    spread: bool = False  # a fleet run: each cell once on any host, not on every host
    max_image_bytes: int | None = None  # an imported image's uncompressed size limit (None: the free disk)
    target_ci: float = 0.05  # sample until each headline CI is within +-this of the median (0: pinned counts)
    min_samples: int = 5
    max_samples: int | None = None  # None: each scenario's samples
    cell_budget_s: float = 0.0  # a cell's sampling loop stops after this many seconds (0: no limit)
    loop_io: str = "direct"  # "buffered" only to measure what direct I/O changes (backing.set_loop_io)
    templates: bool = False  # build each family's image once (harness/run/templates.py; docs/performance.md: off, why)


Unavailable = Callable[[str], "str | None"]


def _backings_for(
    driver: type[Driver], scenario: Scenario, asked: tuple[str, ...], unavailable: Unavailable
) -> list[str]:
    """The backings a cell runs on: those asked (or the scenario's), else the driver's first usable."""
    wanted = asked or scenario.backings
    if wanted:
        return [b for b in wanted if b in driver.backings and unavailable(b) is None]
    for fstype in driver.backings:
        if unavailable(fstype) is None:
            return [fstype]
    return [driver.backings[0]]


def plan_cells(
    scenarios: list[Scenario],
    drivers: list[type[Driver]],
    backings: tuple[str, ...] = (),
    unavailable: Unavailable = backing.unavailable,
    host: str | None = None,
) -> list[Cell]:
    """Every scenario x driver x parameter set x backing the driver can sit on (here, or on `host`,
    where `unavailable` says why a backing cannot be made)."""
    return [
        Cell(scenario=s, driver=d, params=p, backing=b, host=host)
        for s in scenarios
        for d in drivers
        for p in s.param_sets()
        for b in _backings_for(d, s, backings, unavailable)
    ]


def estimate_bytes(cell: Cell) -> int:
    """An upper bound of the bytes the cell's backing store holds at its fullest."""
    image = cell.scenario.image(cell.params)
    total, layers = image.total_bytes, image.layer_count
    steps = cell.scenario.steps(cell.params)
    containers = sum(int(s.args.get("count", 1)) for s in steps if s.op == "start")
    copies = sum(1 for s in steps if s.op in ("commit", "volume"))
    commits = sum(1 for s in steps if s.op == "commit")
    builds = sum(1 for s in steps if s.op == "build" and "image" not in s.args)  # the [image] again
    written = sum(_step_bytes(s, image) for s in steps) * (1 + commits)  # a commit copies what was written
    if cell.driver.style is Style.COPY:
        need = total * (layers * (1 + builds) + containers + copies)
    else:
        need = total * (1 + builds + containers + copies)
    need += _images_need(cell, total, "bytes")
    return int((need + written) * 1.2) + estimate_inodes(cell) * 4096 + 128 * _MiB


def _images_need(cell: Cell, base: int, what: str) -> int:
    """The bytes (or files) the scenario's further images add: their own, and on a copy driver
    every layer's whole copy of the image below it (`base`: the [image]'s bytes or files). An image
    `build` steps import (prebuilt = false) counts once per such step of a sample."""
    s = cell.scenario
    steps = s.steps(cell.params)
    chain, need = {"base": base}, 0
    for prebuilt in (True, False):  # a not pre-built image's base is pre-built
        for name, base_name, image in s.images(cell.params, prebuilt):
            own = image.total_bytes if what == "bytes" else image.total_files
            chain[name] = (chain[base_name] if base_name else 0) + own
            times = 1 if prebuilt else sum(1 for x in steps if x.op == "build" and x.args.get("image") == name)
            need += times * (chain[name] * image.layer_count if cell.driver.style is Style.COPY else own)
    return need


def _step_files(step: Step, image: Image) -> int:
    """How many files a step works on, at most (a glob: every file of the image)."""
    args = step.args
    if "count" in args and step.op == "write":
        return int(args["count"])
    if "path" in args:
        return 1
    if "fraction" in args:
        return max(1, round(args["fraction"] * image.total_files))
    return image.total_files


#: op -> the bytes it can add to each file it works on, from its arguments (beyond copy-up)
_WRITES: dict[str, Callable[[dict[str, Any]], int]] = {
    "write": lambda a: int(a["bytes"]),
    "append": lambda a: int(a.get("bytes", 1)),
    "overwrite": lambda a: int(a.get("bytes", 4)),
    "truncate": lambda a: int(a["size"]),  # growing a file; sparse, but a copy may fill it
}


def _step_bytes(step: Step, image: Image) -> int:
    """The bytes a step can add to the store: what it writes times the files it writes to."""
    grow = _WRITES.get(step.op)
    return grow(step.args) * _step_files(step, image) if grow is not None else 0


def estimate_inodes(cell: Cell) -> int:
    """An upper bound of the inodes the cell's store holds at its fullest (ext4 fixes them at mkfs)."""
    image = cell.scenario.image(cell.params)
    steps = cell.scenario.steps(cell.params)
    containers = sum(int(s.args.get("count", 1)) for s in steps if s.op == "start")
    created = sum(_step_files(s, image) for s in steps if s.op == "write") + sum(
        1 for s in steps if s.op in ("mkdir", "commit")
    )
    copies = image.layer_count + containers if cell.driver.style is Style.COPY else 2 + containers // 8
    builds = sum(1 for s in steps if s.op == "build" and "image" not in s.args)  # the [image] again
    dirs = image.total_files // 4 + 64  # generated paths share directories
    further = _images_need(cell, image.total_files, "files") * 5 // 4  # with their directories
    return (
        int(((image.total_files + dirs) * (copies * (1 + builds)) + further + created * 2 + containers * 16) * 1.3)
        + 4096
    )


def select_drivers(plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
    """The drivers to run and, by name, why the others asked for cannot run here.

    `("all",)` asks for every registered driver but null.
    """
    if names == ("all",):
        names = tuple(n for n in sorted(plugins.registry.drivers) if n != "null")
    if names:
        chosen = [plugins.driver(n) for n in dict.fromkeys(names)]
    else:  # the drivers in the default run: one of each style, not null (it measures the harness)
        chosen = [cls for _, cls in sorted(plugins.registry.drivers.items()) if cls.in_default_run]
    runnable, skipped = [], {}
    for cls in chosen:
        reason = cls.probe()
        if reason is None:
            runnable.append(cls)
        else:
            skipped[cls.name] = reason
    return runnable, skipped


def _build_image(
    image: Image, driver: Driver, store: backing.BackingStore, base: int, name: str = "", parent: str | None = None
) -> tuple[str, list[int]]:
    """Build the image layer by layer on `parent` (its base image's top layer, or None); return its
    top layer and the disk used after each layer. Layer ids are `layer<i>`, `<name>-layer<i>` for a named image."""
    after: list[int] = []
    for i in range(image.layer_count):
        layer_id = f"{name}-layer{i}" if name else f"layer{i}"
        image.apply(i, driver.create_layer(layer_id, parent), driver.layer_format, opaque_xattr=driver.opaque_xattr)
        driver.seal_layer(layer_id)
        parent = layer_id
        after.append(store.usage().bytes - base)
    assert parent is not None
    return parent, after


def _build_images(
    images: list[tuple[str, str | None, Image]],
    driver: Driver,
    store: backing.BackingStore,
    base: int,
    tops: dict[str, str],
    image_bytes: int,
    disk: int,
) -> list[dict[str, Any]]:
    """Build the scenario's pre-built further images in order, each on its base's top layer (as `FROM`), on one store.

    `tops` starts as {"base": the [image]'s top layer} and gains each image's; `disk` is the store's
    use once the [image] is built. Returns, per image, its own bytes, its base's bytes (the whole
    chain below it), and the store's use after it and what it added (docs/results.md).
    """
    chain = {"base": image_bytes}
    out = []
    for name, base_name, image in images:
        top, after = _build_image(image, driver, store, base, name, tops[base_name] if base_name else None)
        tops[name] = top
        below = chain[base_name] if base_name else 0
        chain[name] = below + image.total_bytes
        out.append(
            {
                "name": name,
                "base": base_name,
                "layers": image.layer_count,
                "bytes": image.total_bytes,
                "base_bytes": below,
                "disk_bytes": after[-1],
                "added_bytes": after[-1] - disk,
            }
        )
        disk = after[-1]
    return out


_Sampling = Sampling  # the name harness/run/fleet.py knows


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
    sampling: _Sampling
    overhead_ns: int
    out: dict[str, Any]
    recorded: dict[str, list[int]]
    outcomes: dict[str, dict[str, int]]
    drivers: list[Driver]  # the driver once set up, so the caller can close it
    started: float  # time.monotonic() when the cell began: its set-up runs from here to the first sample
    template: Template | None = None  # the store is a copy of this built one (harness/run/templates.py)


def _measure(run: _CellRun) -> None:
    """Set the driver up in `home` on the open store, build the image, take the samples; `run_cell` cleans up."""
    cell, store, home, sampling, overhead_ns = run.cell, run.store, run.home, run.sampling, run.overhead_ns
    out, recorded, outcomes = run.out, run.recorded, run.outcomes
    s = cell.scenario
    mnt = store.mountpoint
    t = run.template
    base, base_walk = (t.base, t.base_walk) if t else (store.usage(), backing.allocated_bytes(mnt))
    driver = cell.driver(home)
    run.drivers.append(driver)
    driver.setup()
    image = s.image(cell.params)
    if t is not None:  # the image is on the copied store: the driver learns its layers, the page cache gets them
        adopt(driver, t)
        top, per_layer = t.top, list(t.per_layer)
        warm_page_cache(mnt)
    else:
        top, per_layer = _build_image(image, driver, store, base.bytes)
    recorded["image_disk_bytes"].append(per_layer[-1])
    out["image_layers_disk_bytes"] = per_layer
    out["image_bytes"] = image.total_bytes
    out["inspect"]["image"] = driver.inspect(top)
    tops = {"base": top}
    if further := s.images(cell.params):
        out["images"] = _build_images(further, driver, store, base.bytes, tops, image.total_bytes, per_layer[-1])
    steps = s.steps(cell.params)
    rebuilt = any(x.op == "build" and "image" not in x.args for x in steps)
    contents = image.contents() if isinstance(image, SyntheticImage) and rebuilt else None
    unbuilt = {  # imported by build steps, each sample anew; generated contents made here, untimed
        name: (base_name, img, img.contents() if isinstance(img, SyntheticImage) else None)
        for name, base_name, img in s.images(cell.params, prebuilt=False)
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

    rep, measured, spent = 0, 0, 0.0
    loop_start = time.monotonic()
    split = out["time_split_s"]
    split["setup"] = round(loop_start - run.started, 3)

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


def _measure_in_userns(run: _CellRun) -> None:
    """`_measure` in an unprivileged user namespace (a rootless driver, docs/rootless.md).

    The store (root's loop mount) is handed to the namespace's user; a forked child
    builds the image and takes the samples, then closes its driver. What it recorded
    comes back, after an error too; the parent's own handle cleans up what is left.
    """
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

    got, got_recorded, got_outcomes, error = userns.run_in_userns(body, expose=[run.store.mountpoint])
    out.update(got)
    recorded.update(got_recorded)
    for label, counts in got_outcomes.items():
        outcomes[label].update(counts)
    if error is not None:
        raise error


def run_cell(
    cell: Cell,
    workdir: Path,
    sampling: _Sampling | None = None,
    overhead_ns: int = 0,
    ledger: Ledger | None = None,
    template: Template | None = None,
) -> dict[str, Any]:
    """Run one cell in `workdir` (created and removed here) and return its result; with `template`,
    on a copy of that built store instead of a new one."""
    s = cell.scenario
    sampling = sampling or _Sampling(*s.repeat(cell.params), cold=False)
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
    started = time.monotonic()
    if ledger is not None:
        ledger.made("dir", workdir)
    workdir.mkdir(mode=0o700)
    if template is not None:
        store = backing.BackingStore(
            workdir, cell.backing, template.size_bytes, template.inodes, ledger, template.image
        )
    else:
        store = backing.BackingStore(workdir, cell.backing, estimate_bytes(cell), estimate_inodes(cell), ledger)
    out["template"] = template is not None
    drivers: list[Driver] = []  # the driver, once set up, for the cleanup below
    try:
        with _time_limit(sampling.timeout_s):
            home = store.open() / cell.driver.name
            out["loop_direct_io"] = store.direct_io
            if template is None:
                home.mkdir(mode=0o700)
            measure = _measure_in_userns if cell.driver.userns else _measure
            measure(
                _CellRun(cell, store, home, sampling, overhead_ns, out, recorded, outcomes, drivers, started, template)
            )
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
        _release(store, drivers, workdir, ledger, below=store.mountpoint / cell.driver.name)
        out["metrics"] = {m: {"unit": results.unit_of(m), "samples": v} for m, v in recorded.items()}
        out["outcomes"] = {k: dict(v) for k, v in outcomes.items()}
        ended = time.monotonic()
        split = out["time_split_s"]
        if not split["setup"]:  # the cell failed before its first sample: all of it was set-up
            split["setup"] = round(measured_until - started, 3)
        split["teardown"] = round(ended - measured_until, 3)
        out["duration_s"] = round(ended - started, 3)
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


def build_template(cell: Cell, workdir: Path, size_bytes: int, inodes: int, ledger: Ledger | None = None) -> Template:
    """Build the cell's image on a fresh store in `workdir` as `_measure` does, and keep its
    backing file, cleanly unmounted, as its family's template (harness/run/templates.py)."""
    if ledger is not None:
        ledger.made("dir", workdir)
    workdir.mkdir(mode=0o700)
    store = backing.BackingStore(workdir, cell.backing, size_bytes, inodes, ledger)
    driver: Driver | None = None
    try:
        home = store.open() / cell.driver.name
        home.mkdir(mode=0o700)
        base, base_walk = store.usage(), backing.allocated_bytes(store.mountpoint)
        driver = cell.driver(home)
        driver.setup()
        image = cell.scenario.image(cell.params)
        top, per_layer = _build_image(image, driver, store, base.bytes)
        template = Template(
            store.image,
            store.size_bytes,
            inodes,
            base,
            base_walk,
            top,
            per_layer,
            [(f"layer{i}", f"layer{i - 1}" if i else None) for i in range(image.layer_count)],
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


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so a terminated run ends as an interrupted one: cleaned up, cells kept."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


Progress = Callable[[str], None]


def _check_disk(cells: list[Cell], work_parent: Path, progress: Progress) -> None:
    need = {id(c): estimate_bytes(c) for c in cells}
    biggest = max(cells, key=lambda c: need[id(c)])
    free = shutil.disk_usage(work_parent).free
    if free < need[id(biggest)]:
        raise UserError(
            f"not enough free disk under {work_parent}: the largest cell ({biggest.describe()}) needs "
            f"{bytes_text(need[id(biggest)])}, {bytes_text(free)} is free; free some space, pass "
            f"--work-root on a bigger disk, or --param to shrink it"
        )
    progress(f"{len(cells)} cells; the largest needs {bytes_text(need[id(biggest)])} of disk ({bytes_text(free)} free)")


def _cell_key(
    scenario: str, driver: str, params: dict[str, Any], backing_fs: str, host: str | None = None
) -> tuple[str, str, str, str, str | None]:
    return scenario, driver, results.params_text(params), backing_fs, host


def _resume(config: RunConfig) -> tuple[RunConfig, dict[str, Any], Path]:
    """The config, document and path of an interrupted run, to finish it."""
    assert config.resume is not None
    path = config.resume
    doc = results.read(path)
    settings = doc.get("settings", {})
    if any(
        key not in settings
        for key in (
            "scenarios",
            "drivers",
            "backings",
            "samples",
            "warmup",
            "min_time_s",
            "cold",
            "order",
            "seed",
            "overrides",
        )
    ):
        raise UserError(f"{path}: has no run settings to resume from")
    if doc.get("run") is not None and results.run_state(doc) == "running":
        raise UserError(f"--resume {path}: the run is still going (pid {doc['run']['pid']}); let it finish")
    _refuse_changed_settings(config, doc, path)
    resumed = RunConfig(
        scenarios=tuple(settings["scenarios"]),
        drivers=tuple(settings["drivers"]),
        backings=tuple(settings["backings"]),
        results_dir=config.results_dir,
        label=doc["label"],
        work_root=config.work_root,
        samples=settings["samples"],
        warmup=settings["warmup"],
        min_time_s=settings["min_time_s"],
        cold=settings["cold"],
        order=settings["order"],
        seed=settings["seed"],
        cell_timeout_s=settings.get("cell_timeout_s", config.cell_timeout_s),
        overrides=settings["overrides"],
        quick=settings.get("quick", False),
        spread=settings.get("spread", False),
        # a run from before adaptive sampling took pinned counts
        target_ci=settings.get("target_ci", 0.0),
        min_samples=settings.get("min_samples", config.min_samples),
        max_samples=settings.get("max_samples", config.max_samples),
        cell_budget_s=settings.get("cell_budget_s", config.cell_budget_s),
        templates=settings.get("templates", False),
        loop_io=settings.get("loop_io", "direct"),
    )
    for s in resolve_scenarios(resumed.scenarios, resumed.overrides, resumed.quick):
        if doc["scenarios"].get(s.name, {}).get("sha256") != s.sha256:
            raise UserError(
                f"{path}: scenario {s.name!r} changed since the run started ({s.path}); start a new run instead"
            )
    doc["cells"] = [c for c in doc["cells"] if c["status"] in ("ok", "error")]
    return resumed, doc, path


#: RunConfig field (and key in a results file's settings) -> the option that sets it, and what it is
_KEPT = {
    "drivers": ("-d", "drivers"),
    "backings": ("-b", "backings"),
    "overrides": ("-p", "parameters"),
    "samples": ("--samples", "samples"),
    "warmup": ("--warmup", "warm-up samples"),
    "min_time_s": ("--min-time", "min time"),
    "quick": ("--quick", "quick"),
    "cold": ("--cold", "cold"),
    "order": ("--order", "order"),
    "seed": ("--seed", "seed"),
    "cell_timeout_s": ("--cell-timeout", "cell timeout"),
    "target_ci": ("--target-ci", "target CI"),
    "min_samples": ("--min-samples", "min samples"),
    "max_samples": ("--max-samples", "max samples"),
    "cell_budget_s": ("--cell-budget", "cell budget"),
    "templates": ("--templates", "templates"),
    "loop_io": ("--loop-io", "loop I/O"),
}


def _plain(value: Any) -> Any:
    """A setting as comparable data: lists in any order, numbers as floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return sorted(str(v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ";".join(f"{k}={_text(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return "unset" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _refuse_changed_settings(config: RunConfig, doc: dict[str, Any], path: Path) -> None:
    """`--resume` finishes a run with its own settings: refuse any other one given, naming what the run had."""
    defaults, settings = RunConfig(), doc["settings"]
    changed: list[tuple[str, str]] = []  # (option, "what the run was made with")
    if config.scenarios:
        asked = sorted(os.path.realpath(s.path) for s in resolve_scenarios(config.scenarios))
        if asked != sorted(os.path.realpath(p) for p in settings["scenarios"]):
            changed.append(("the scenario arguments", f"scenarios {_text(list(doc['scenarios']))}"))
    for name, (option, what) in _KEPT.items():
        given, default = getattr(config, name), getattr(defaults, name)
        had = settings.get(name, default)  # older files lack the newer settings
        if _plain(given) != _plain(default) and _plain(given) != _plain(had):
            changed.append((option, f"{what} {_text(had)}"))
    if config.label != defaults.label and config.label != doc["label"]:
        changed.append(("--label", f"label {doc['label']}"))
    if config.results_dir != defaults.results_dir and config.results_dir.resolve() not in path.resolve().parents:
        changed.append(("--results-dir", f"its results in {path.parent}"))
    if changed:
        raise UserError(
            f"--resume: the run was made with {' and '.join(w for _, w in changed)}; "
            f"drop {' and '.join(o for o, _ in changed)} or start a new run"
        )


def _results_path(config: RunConfig, stamp: str) -> Path:
    """Claim a new results file name (created empty, exclusively): a second run in the
    same second gets a suffix instead of the first run's file."""
    folder = config.results_dir / machine.machine_name()
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = folder / (f"{stamp}_{config.label}.json" if n == 1 else f"{stamp}_{config.label}-{n}.json")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return path
        except FileExistsError:
            n += 1


class Executor(Protocol):
    """Runs the planned cells somewhere other than here: on a fleet's hosts (harness/run/fleet.py)."""

    def select(self, plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
        """As `select_drivers`: the drivers some host can run and, by name, why no host can run the others."""

    def plan(self, scenarios: list[Scenario], drivers: list[type[Driver]], config: RunConfig) -> list[Cell]:
        """The cells, each with the host it runs on (None: any host)."""

    def execute(
        self, doc: dict[str, Any], cells: list[tuple[Cell, _Sampling]], progress: Progress
    ) -> Iterator[dict[str, Any]]:
        """Each cell's result as it finishes; adds to `doc` what it learns about the hosts."""


def _sampling_for(config: RunConfig, cell: Cell) -> _Sampling:
    samples, warmup, min_time_s = cell.scenario.repeat(cell.params)
    pinned = config.samples is not None or not cell.scenario.adaptive()
    return _Sampling(
        samples=config.samples or samples,
        warmup=warmup if config.warmup is None else config.warmup,
        min_time_s=min_time_s if config.min_time_s is None else config.min_time_s,
        cold=config.cold,
        timeout_s=config.cell_timeout_s,
        target_ci=0.0 if pinned else config.target_ci,
        min_samples=config.min_samples,
        max_samples=config.max_samples,
        budget_s=config.cell_budget_s,
    )


@dataclass(frozen=True)
class PlannedCell:
    """A cell of `plan`: what its store needs, and how long it took on this machine before."""

    cell: Cell
    disk_bytes: int  # estimate_bytes
    seconds: float | None  # median duration_s of this cell in past runs here; None: never ran here


@dataclass(frozen=True)
class Plan:
    cells: list[PlannedCell]
    skipped: dict[str, str]  # driver -> why it cannot run here
    history: int  # results files of this machine the times came from


def plan(config: RunConfig, plugins: Plugins | None = None) -> Plan:
    """What `run(config)` would run here, making nothing: each cell with its disk estimate and its
    median time in this machine's past results (`config.results_dir`/<machine>/, finished cells only)."""
    plugins = plugins or default_plugins()
    scenarios = resolve_scenarios(config.scenarios, config.overrides, config.quick)
    drivers, skipped = select_drivers(plugins, config.drivers)
    if not drivers:
        raise UserError("no driver can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    for b in config.backings:
        if (why := backing.unavailable(b)) is not None:
            raise UserError(f"--backing {b}: {why}")
    cells = plan_cells(scenarios, drivers, config.backings)
    if not cells:
        raise UserError(f"no driver can sit on --backing {', '.join(config.backings)}")
    folder = config.results_dir / machine.machine_name()
    past: dict[tuple[str, ...], list[float]] = defaultdict(list)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in files:
        try:
            doc = results.read(path)
        except UserError:
            continue  # not a results file of ours: no history from it
        for c in doc["cells"]:
            if c["status"] == "ok" and c.get("duration_s") is not None:
                past[results.cell_key(c)[:4]].append(c["duration_s"])
    planned = []
    for c in cells:
        key = results.cell_key(
            {"scenario": c.scenario.name, "driver": c.driver.name, "backing": c.backing, "params": c.params}
        )[:4]
        planned.append(PlannedCell(c, estimate_bytes(c), float(statistics.median(past[key])) if past[key] else None))
    return Plan(planned, skipped, len(files))


def _tell(
    events: CellEvents,
    total: int,
    kind: Literal["planned", "started", "finished"],
    index: int,
    cell: Cell,
    result: dict[str, Any] | None = None,
) -> None:
    """Tell `events` of the run's `index`th cell (of `total`); once finished, its duration and status."""
    events(
        CellEvent(
            kind,
            index,
            total,
            cell.scenario.name,
            cell.driver.name,
            cell.params,
            cell.backing,
            None if result is None else result.get("duration_s"),
            None if result is None else result["status"],
        )
    )


def run(
    config: RunConfig,
    plugins: Plugins | None = None,
    progress: Progress = lambda s: None,
    executor: Executor | None = None,
    events: CellEvents | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run the configured suite (or finish an interrupted one) here, or through `executor` on a
    fleet's hosts; return the document and its path. `progress` gets lines of text; `events`, if
    given, each cell planned, started and finished here (harness/run/progress.py), instead of the
    `[i/n]` lines."""
    plugins = plugins or default_plugins()
    previous: dict[str, Any] | None = None
    if config.resume is not None:
        safety.check_output_dir(config.resume.parent, "--resume")
        config, previous, resume_path = _resume(config)
        if previous["status"] == "finished":
            progress(f"{resume_path}: the run finished at {previous['finished_utc']}; nothing to do")
            return previous, resume_path
    else:
        safety.check_output_dir(config.results_dir, "--results-dir")
    scenarios = resolve_scenarios(config.scenarios, config.overrides, config.quick)
    drivers, skipped = (executor.select if executor else select_drivers)(plugins, config.drivers)
    for name, reason in skipped.items():
        progress(f"skipping driver {name}: {reason}")
    if not drivers:
        raise UserError("no driver can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    for b in config.backings if executor is None else ():  # a fleet's hosts tell their own
        if (why := backing.unavailable(b)) is not None:
            raise UserError(f"--backing {b}: {why}")
    cells = executor.plan(scenarios, drivers, config) if executor else plan_cells(scenarios, drivers, config.backings)
    if not cells:
        raise UserError(f"no driver can sit on --backing {', '.join(config.backings)}")
    if config.cold and executor is None and os.geteuid() != 0:
        raise UserError("--cold drops the page cache, which needs root")
    if config.order == "random":
        random.Random(config.seed).shuffle(cells)
    if previous is not None:
        # A cell planned for any host (host None) is done once it is done on one.
        done = {
            _cell_key(c["scenario"], c["driver"], c["params"], c["backing"], host)
            for c in previous["cells"]
            for host in {c.get("host"), None}
        }
        cells = [c for c in cells if _cell_key(c.scenario.name, c.driver.name, c.params, c.backing, c.host) not in done]
        progress(f"resuming {resume_path}: {len(previous['cells'])} cells done, {len(cells)} to go")

    if executor is None:  # a fleet's hosts use and check their own
        work_root = safety.prepare_work_root(config.work_root or safety.DEFAULT_WORK_ROOT)
        set_image_limit(config.max_image_bytes, work_root)
        backing.set_loop_io(config.loop_io)
        set_layout_cache(work_root)  # synthetic-oci images are packed once under it
        if cells:
            _check_disk(cells, work_root, progress)

    if previous is not None:
        doc, path = previous, resume_path
        doc["status"] = "running"
        doc["run"] = results.run_record()
    else:
        doc = results.new_document(config.label, machine.machine_info(), machine.tool_info())
        doc["helpers"] = backing.mkfs_versions(sorted({c.backing for c in cells} - {"dir"}))
        for cls in drivers:
            doc["helpers"].update(cls.versions())
        doc["drivers"] = {
            **{d.name: {"style": d.style.value, "available": True, "reason": None} for d in drivers},
            **{
                n: {"style": plugins.driver(n).style.value, "available": False, "reason": r} for n, r in skipped.items()
            },
        }
        doc["scenarios"] = {
            s.name: {"path": s.path, "sha256": s.sha256, "description": s.description, "params": s.params}
            for s in scenarios
        }
        doc["overhead"] = overhead.measure(plugins.registry.drivers.get("null"))
        doc["settings"] = {
            "scenarios": [s.path for s in scenarios],
            "drivers": [d.name for d in drivers],
            "order": config.order,
            "seed": config.seed,
            "cold": config.cold,
            "quick": config.quick,
            "samples": config.samples,
            "warmup": config.warmup,
            "min_time_s": config.min_time_s,
            "cell_timeout_s": config.cell_timeout_s,
            "backings": list(config.backings),
            "overrides": config.overrides,
            "spread": config.spread,
            "target_ci": config.target_ci,
            "min_samples": config.min_samples,
            "max_samples": config.max_samples,
            "cell_budget_s": config.cell_budget_s,
            "templates": config.templates,
            "loop_io": config.loop_io,
        }
        path = _results_path(config, doc["started_utc"].replace("-", "").replace(":", ""))
    results.save(doc, path)
    if executor is not None:
        try:
            for result in executor.execute(doc, [(c, _sampling_for(config, c)) for c in cells], progress):
                doc["cells"].append(result)
                results.save(doc, path)
        except KeyboardInterrupt:
            doc["status"] = "interrupted"
            doc["finished_utc"] = results.utc_now()
            results.save(doc, path)
            raise
        doc["status"] = "finished"
        doc["finished_utc"] = results.utc_now()
        results.save(doc, path)
        return doc, path

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    ledger = Ledger(run_dir / LEDGER_NAME).open()
    templates = (
        Templates.plan(run_dir, cells, lambda c: (estimate_bytes(c), estimate_inodes(c)), ledger)
        if config.templates
        else None
    )
    event = functools.partial(_tell, events or (lambda e: None), len(cells))
    for i, cell in enumerate(cells, 1):
        event("planned", i, cell)
    try:
        with sigterm_as_interrupt():
            for i, cell in enumerate(cells, 1):
                if events is None:
                    progress(f"[{i}/{len(cells)}] {cell.describe()}")
                event("started", i, cell)
                s = cell.scenario
                sampling = _sampling_for(config, cell)
                try:
                    template, build_s = (
                        templates.get(cell, functools.partial(build_template, cell, ledger=ledger))
                        if templates
                        else (None, 0.0)
                    )
                    result = run_cell(
                        cell, run_dir / f"cell{i}", sampling, doc["overhead"]["timer_ns"], ledger, template
                    )
                    if templates:
                        templates.done(cell)
                    if build_s:  # the family's build is this cell's set-up
                        result["time_split_s"]["setup"] = round(result["time_split_s"]["setup"] + build_s, 3)
                        result["duration_s"] = round(result["duration_s"] + build_s, 3)
                except KeyboardInterrupt:
                    doc["cells"].append(
                        {
                            "scenario": s.name,
                            "driver": cell.driver.name,
                            "params": cell.params,
                            "backing": cell.backing,
                            "status": "interrupted",
                            "error": "interrupted",
                            "metrics": {},
                        }
                    )
                    doc["status"] = "interrupted"
                    doc["finished_utc"] = results.utc_now()
                    results.save(doc, path)
                    raise
                doc["cells"].append(result)
                event("finished", i, cell, result)
                if result["status"] == "error":
                    progress(f"    error: {result['error']}")
                results.save(doc, path)
    finally:
        if templates:
            templates.close()
        ledger.close()
        (run_dir / LEDGER_NAME).unlink(missing_ok=True)
        safety.remove_tree(run_dir)
    doc["status"] = "finished"
    doc["finished_utc"] = results.utc_now()
    results.save(doc, path)
    return doc, path
