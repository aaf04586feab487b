"""What a run runs: its settings, its cells (scenario x driver x parameter set x backing), the
drivers that can run here, and the dry run's plan with disk estimates and past times."""

from __future__ import annotations

import dataclasses
import functools
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from layerbench.analysis import results
from layerbench.analysis.results_model import CellKey, median
from layerbench.driver import Driver
from layerbench.errors import NotBuilt, UserError
from layerbench.images.image import Image
from layerbench.ops import OPS, Footprint
from layerbench.plugins import Plugins, default_plugins
from layerbench.run import backing, machine
from layerbench.run.config import RunConfig
from layerbench.run.estimates import estimate_bytes
from layerbench.scenario import Scenario, Step, builtin_scenarios, load_scenario, resolve_scenarios

__all__ = [
    "Cell",
    "RunConfig",
    "plan_cells",
    "order_cells",
    "select_drivers",
    "Planner",
    "Here",
    "Chosen",
    "choose",
    "Plan",
    "PlannedCell",
    "plan",
]


@dataclass(frozen=True)
class Cell:
    """One scenario x one driver x one parameter set x one backing filesystem: what a store is made for.

    Its images and steps are resolved from the scenario once, when first asked for, and shared
    by the estimates, the measuring and the templates (an imported image reads its tars once).
    """

    scenario: Scenario
    driver: type[Driver]
    params: dict[str, Any]
    backing: str
    host: str | None = None  # a fleet's host it runs on (harness/run/fleet.py); None: here, or any host

    @property
    def key(self) -> CellKey:
        """The cell's key in its results (`host` "" for a cell planned for any host)."""
        return CellKey.of(self.scenario.name, self.driver.name, self.backing, self.params, self.host)

    def describe(self, ran_on: str = "") -> str:
        """The cell in a run's lines and errors: `copy-up overlay2 file_size=4096 on ext4 @ host-a` (CellKey.name);
        `ran_on`: the host a cell planned for any host of a fleet ran on."""
        key = self.key
        return key._replace(host=key.host or ran_on).name(params_first=True)

    @functools.cached_property
    def image(self) -> Image:
        """The scenario's [image], with this cell's parameters."""
        return self.scenario.image(self.params)

    @functools.cached_property
    def images(self) -> list[tuple[str, str | None, Image]]:
        """The further images built before the samples (`Scenario.images`)."""
        return self.scenario.images(self.params)

    @functools.cached_property
    def unbuilt(self) -> list[tuple[str, str | None, Image]]:
        """The further images `build` steps import in each sample (prebuilt = false)."""
        return self.scenario.images(self.params, prebuilt=False)

    @functools.cached_property
    def steps(self) -> list[Step]:
        """The steps of one sample, with this cell's parameters."""
        return self.scenario.steps(self.params)

    @functools.cached_property
    def footprint(self) -> Footprint:
        """What one sample's steps can add to the store, summed (harness/ops.py)."""
        ops = [(OPS[s.op], s.args) for s in self.steps]
        return sum((op.footprint(op.with_defaults(args), self.image) for op, args in ops), Footprint())

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without what it resolved: another process opens its images from its own files."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_plain(self) -> dict[str, Any]:
        """The cell as plain data, to run it in another process or on another host."""
        s = self.scenario
        return {
            "scenario": s.path,
            "name": s.name,
            "sha256": s.sha256,
            "overrides": s.overrides,
            "driver": self.driver.name,
            "engine_address": self.driver.engine_address,  # --containerd-address: the engine's socket on each host
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
        address = data.get("engine_address")
        if address is not None and not isinstance(address, str):
            raise UserError(f"cell of {data['name']!r}: engine_address is not a path")
        driver = plugins.driver(data["driver"])
        return cls(scenario, driver.at(address), data["params"], data["backing"], data["host"])


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


def order_cells(cells: list[Cell], order: str, seed: int) -> list[Cell]:
    """The cells in the order a run takes them: shuffled by `seed` ("random"), else as planned."""
    ordered = list(cells)
    if order == "random":
        random.Random(seed).shuffle(ordered)
    return ordered


def select_drivers(
    plugins: Plugins, names: tuple[str, ...], containerd_address: str | None = None
) -> tuple[list[type[Driver]], dict[str, str]]:
    """The drivers to run and, by name, why the others asked for cannot run here. With
    `containerd_address`, containerd's drivers run on that daemon (their probe checks it).

    `("all",)` asks for every registered driver but the test-only ones (null, the skeleton example).
    """
    if names == ("all",):
        names = tuple(n for n, cls in sorted(plugins.registry.drivers.items()) if not cls.test_only)
    if names:
        chosen = [plugins.driver(n) for n in dict.fromkeys(names)]
    else:  # the drivers in the default run: one of each style, not null (it measures the harness)
        chosen = [cls for _, cls in sorted(plugins.registry.drivers.items()) if cls.in_default_run]
    chosen = [cls.at(containerd_address) if cls.engine == "containerd" else cls for cls in chosen]
    runnable, skipped = [], {}
    for cls in chosen:
        reason = cls.probe()
        if reason is None:
            runnable.append(cls)
        else:
            skipped[cls.name] = reason
    return runnable, skipped


class Planner(Protocol):
    """Where a run's cells may run: which drivers can run there, and the cells for them."""

    def select(self, plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
        """As `select_drivers`: the drivers that can run and, by name, why the others cannot."""

    def plan(self, scenarios: list[Scenario], drivers: list[type[Driver]], config: RunConfig) -> list[Cell]:
        """The cells, each with the host it runs on (None: any host); refuses a backing that cannot be made."""


class Here:
    """This machine as a `Planner`: its drivers' probes, and the backings it can make."""

    def __init__(self, containerd_address: str | None = None) -> None:
        self.containerd_address = containerd_address  # containerd's drivers run on that daemon

    def select(self, plugins: Plugins, names: tuple[str, ...]) -> tuple[list[type[Driver]], dict[str, str]]:
        return select_drivers(plugins, names, self.containerd_address)

    def plan(self, scenarios: list[Scenario], drivers: list[type[Driver]], config: RunConfig) -> list[Cell]:
        for b in config.backings:
            if (why := backing.unavailable(b)) is not None:
                raise UserError(f"--backing {b}: {why}")
        return plan_cells(scenarios, drivers, config.backings)


@dataclass(frozen=True)
class Chosen:
    """What a run runs: its scenarios, the drivers that can run, why the others cannot, the cells as planned."""

    scenarios: list[Scenario]
    drivers: list[type[Driver]]
    skipped: dict[str, str]  # driver -> why it cannot run
    cells: list[Cell]


def choose(
    config: RunConfig, plugins: Plugins, planner: Planner, progress: Callable[[str], None] = lambda line: None
) -> Chosen:
    """The configured scenarios, drivers and cells where `planner` says, each driver that cannot run told
    to `progress`; one line (UserError) when no driver can run or none can sit on the backings asked for.
    The dry run (`plan`), a run here and a fleet's run all choose their cells here."""
    scenarios = resolve_scenarios(config.scenarios, config.overrides, config.quick, config.long)
    drivers, skipped = planner.select(plugins, config.drivers)
    for name, reason in skipped.items():
        progress(f"skipping driver {name}: {reason}")
    if not drivers:
        raise UserError("no driver can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    cells = planner.plan(scenarios, drivers, config)
    if not cells:
        raise UserError(f"no driver can sit on --backing {', '.join(config.backings)}")
    return Chosen(scenarios, drivers, skipped, cells)


@dataclass(frozen=True)
class PlannedCell:
    """A cell of `plan`: what its store needs, and how long it took on this machine before."""

    cell: Cell
    disk_bytes: int | None  # estimate_bytes; None: an image a dry run does not build (NotBuilt)
    seconds: float | None  # median duration_s of this cell in past runs here; None: never ran here


@dataclass(frozen=True)
class Plan:
    cells: list[PlannedCell]
    skipped: dict[str, str]  # driver -> why it cannot run here
    history: int  # results files of this machine the times came from


def plan(config: RunConfig, plugins: Plugins | None = None) -> Plan:
    """What `run(config)` would run here, making nothing: each cell with its disk estimate and its
    median time in this machine's past results (`config.results_dir`/<machine>/, finished cells only)."""
    chosen = choose(config, plugins or default_plugins(), Here(config.containerd_address))
    folder = config.results_dir / machine.machine_name()
    past: dict[CellKey, list[float]] = defaultdict(list)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in files:
        try:
            run = results.read_document(path)
        except UserError:
            continue  # not a results file of ours: no history from it
        for done in run.ok():
            if done.duration_s is not None:
                past[done.key.any_host()].append(done.duration_s)
    planned = []
    for c in chosen.cells:
        key = c.key.any_host()
        try:
            need: int | None = estimate_bytes(c)
        except NotBuilt:  # a dry run builds no image: its size is known once built
            need = None
        planned.append(PlannedCell(c, need, median(past[key])))
    return Plan(planned, chosen.skipped, len(files))
