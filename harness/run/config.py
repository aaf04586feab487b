"""A run's settings, each defined once: a `RunConfig` field whose metadata says how `layerbench run`
takes it (`Flag`; harness/cli/run.py declares the options from these) and how the results file
keeps it for `--resume` (`Kept`: saved by `RunConfig.settings`, read back by
`RunConfig.resumed`, a change refused by harness/run/resume.py). Adding a setting is adding a field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbench.environment import LOOP_IO, RunEnvironment
from layerbench.errors import UserError
from layerbench.images.image_sources import parse_size
from layerbench.run.backing import BACKINGS

__all__ = ["RunConfig", "Flag", "Kept", "SAME", "parse_param", "parse_label"]

#: `Kept.old`: a results file without the setting meant what this invocation says (its default, or given)
SAME = object()


@dataclass(frozen=True)
class Flag:
    """How `layerbench run` takes a setting. `decls`: the option's names (the first names it in
    messages); an empty `decls` is the command's argument. `parse` makes the field's value of what
    click gives (a UserError for bad input)."""

    decls: tuple[str, ...]
    help: str = ""
    type: type | None = None  # int, float, str or Path; None: str (or a flag)
    kind: str = "value"  # "value", "many" (repeatable), "flag" (--x), "switch" (--x/--no-x), "argument"
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    metavar: str | None = None
    show_default: bool = False
    exists: bool = False  # a Path that must be an existing file
    parse: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        """How messages name it: `-d`, `--samples`, `--templates`."""
        return self.decls[0].split("/")[0] if self.decls else "the scenario arguments"


@dataclass(frozen=True)
class Kept:
    """How the results file keeps a setting (in `settings`) and `--resume` reads it back.

    `what` names it in `--resume`'s refusal of another value ("loop I/O"; None: not checked);
    `required`: a file without it cannot be resumed; `old`: what a file from before the setting
    meant (`SAME`: what this invocation says)."""

    what: str | None = None
    required: bool = False
    old: Any = SAME


def parse_param(text: str) -> tuple[str, list[int | str]]:
    """`name=1,2,3` -> ("name", [1, 2, 3]); values that are not whole numbers stay strings (`+` too: a link's
    `100mbit+20ms`)."""
    m = re.match(r"^([a-z_][a-z0-9_]*)=([A-Za-z0-9_.+-]+(?:,[A-Za-z0-9_.+-]+)*)$", text)
    if not m:
        raise UserError(f"--param {text!r}: expected name=value or name=v1,v2 (whole numbers or words)")
    return m.group(1), [int(v) if v.isdigit() else v for v in m.group(2).split(",")]


def parse_label(text: str) -> str:
    if not re.match(r"^[A-Za-z0-9._-]+$", text):
        raise UserError(f"--label {text!r}: use letters, digits, '.', '_' and '-' only")
    return text


def _params(texts: tuple[str, ...]) -> dict[str, list[Any]]:
    return dict(parse_param(p) for p in texts)


def _size(text: str | None) -> int | None:
    return None if text is None else parse_size(text)


def meta(flag: Flag | None, kept: Kept | None = None) -> dict[str, Any]:
    """A `RunConfig` field's metadata: its option, and how the results file keeps it (None: not kept)."""
    return {"flag": flag, "kept": kept}


@dataclass
class RunConfig:
    """A run's settings, as `layerbench run` takes them (in this order in its help); the results
    file keeps them for `--resume`."""

    scenarios: tuple[str, ...] = field(default=(), metadata=meta(Flag((), kind="argument"), Kept(required=True)))
    drivers: tuple[str, ...] = field(
        default=(),
        metadata=meta(
            Flag(
                ("-d", "--driver"),
                "Driver to run (repeatable; 'all' for every driver but the test-only ones: null, the skeleton "
                "example). Default: overlay2, btrfs and vfs, where they can run.",
                kind="many",
                metavar="NAME",
            ),
            Kept("drivers", required=True),
        ),
    )
    overrides: dict[str, list[Any]] = field(
        default_factory=dict,
        metadata=meta(
            Flag(
                ("-p", "--param"),
                "Override a swept parameter of every scenario that has it.",
                kind="many",
                metavar="NAME=V[,V...]",
                parse=_params,
            ),
            Kept("parameters", required=True),
        ),
    )
    backings: tuple[str, ...] = field(
        default=(),
        metadata=meta(
            Flag(
                ("-b", "--backing"),
                "Backing filesystem (repeatable: a sweep). Default: each driver's first usable one.",
                kind="many",
                choices=BACKINGS,
            ),
            Kept("backings", required=True),
        ),
    )
    samples: int | None = field(
        default=None,
        metadata=meta(
            Flag(("--samples",), "Exactly this many samples per cell (default: until sure, --target-ci).", int, low=1),
            Kept("samples", required=True),
        ),
    )
    warmup: int | None = field(
        default=None,
        metadata=meta(
            Flag(("--warmup",), "Warm-up samples per cell (default: the scenario's).", int, low=0),
            Kept("warm-up samples", required=True),
        ),
    )
    min_time_s: float | None = field(
        default=None,
        metadata=meta(
            Flag(
                ("--min-time",),
                "Keep sampling each cell until its samples took this long (default: the scenario's).",
                float,
                low=0,
                metavar="SECONDS",
            ),
            Kept("min time", required=True),
        ),
    )
    target_ci: float = field(
        default=0.05,
        metadata=meta(
            Flag(
                ("--target-ci",),
                "Sample each cell until every timing metric's 95% CI is within +-FRACTION of its median (0: the "
                "scenario's exact counts; docs/performance.md).",
                float,
                low=0,
                high=1,
                metavar="FRACTION",
                show_default=True,
            ),
            Kept("target CI", old=0.0),
        ),
    )
    min_samples: int = field(
        default=5,
        metadata=meta(
            Flag(
                ("--min-samples",),
                "With --target-ci: samples a cell takes at least (at most the scenario's own count).",
                int,
                low=1,
                show_default=True,
            ),
            Kept("min samples"),
        ),
    )
    max_samples: int | None = field(
        default=None,
        metadata=meta(
            Flag(
                ("--max-samples",),
                "With --target-ci: samples a cell takes at most (default: the scenario's count, so a cell only "
                "ends early, once sure).",
                int,
                low=1,
            ),
            Kept("max samples"),
        ),
    )
    cell_budget_s: float = field(
        default=0.0,
        metadata=meta(
            Flag(
                ("--cell-budget",),
                "With --target-ci: stop sampling a cell after this long (0: no limit).",
                float,
                low=0,
                metavar="SECONDS",
                show_default=True,
            ),
            Kept("cell budget"),
        ),
    )
    templates: bool = field(
        default=False,
        metadata=meta(
            Flag(
                ("--templates/--no-templates",),
                "Build each image once per driver and backing, and start its cells from copies of that store "
                "(pays where a build costs more than a copy: many files; docs/performance.md).",
                kind="switch",
                show_default=True,
            ),
            Kept("templates", old=False),
        ),
    )
    overlap_teardown: bool = field(
        default=False,
        metadata=meta(
            Flag(
                ("--overlap-teardown/--no-overlap-teardown",),
                "Tear each cell down on a thread while the next one sets up; it ends before the next sample "
                "(gains where set-up and teardown do not share the cores and disk; docs/performance.md).",
                kind="switch",
                show_default=True,
            ),
            Kept("overlapped teardown", old=False),
        ),
    )
    quick: bool = field(
        default=False,
        metadata=meta(
            Flag(("--quick",), "The quick suite: each scenario's [quick] values and samples.", kind="flag"),
            Kept("quick", old=False),
        ),
    )
    long: bool = field(
        default=False,
        metadata=meta(
            Flag(
                ("--long",),
                "With the long sweeps too (100,000-file startup, 50-container vfs sharing, 256 MiB copy-ups, "
                "128-layer vfs builds...): each scenario's `long = true` sets and [long] values.",
                kind="flag",
            ),
            Kept("long", old=False),
        ),
    )
    cold: bool = field(
        default=False,
        metadata=meta(
            Flag(("--cold",), "Sync and drop the page cache before every sample (root).", kind="flag"),
            Kept("cold", required=True),
        ),
    )
    order: str = field(
        default="random",
        metadata=meta(
            Flag(
                ("--order",),
                "Cell order: seeded random, or scenario x driver x parameters as planned.",
                choices=("random", "planned"),
                show_default=True,
            ),
            Kept("order", required=True),
        ),
    )
    seed: int = field(
        default=0,
        metadata=meta(
            Flag(("--seed",), "Seed of the random cell order.", int, show_default=True), Kept("seed", required=True)
        ),
    )
    label: str = field(
        default="run",
        metadata=meta(Flag(("--label",), "Label in the results file name.", show_default=True, parse=parse_label)),
    )
    results_dir: Path = field(
        default=Path("results"), metadata=meta(Flag(("--results-dir",), type=Path, show_default=True))
    )
    work_root: Path | None = field(
        default=None,
        metadata=meta(
            Flag(
                ("--work-root",),
                "Where backing stores are made: a directory of layerbench's own (default: /var/tmp/layerbench).",
                Path,
            )
        ),
    )
    cell_timeout_s: float = field(
        default=1800.0,
        metadata=meta(
            Flag(
                ("--cell-timeout",),
                "Fail a cell that runs longer, release it, and go on (0: no limit).",
                float,
                low=0,
                metavar="SECONDS",
                show_default=True,
            ),
            Kept("cell timeout"),
        ),
    )
    max_image_bytes: int | None = field(
        default=None,
        metadata=meta(
            Flag(
                ("--max-image-bytes",),
                "Refuse an imported image larger than SIZE uncompressed (500M, 10G; default: the free disk).",
                metavar="SIZE",
                parse=_size,
            ),
            Kept("image size limit", old=None),
        ),
    )
    loop_io: str = field(
        default="direct",
        metadata=meta(
            Flag(
                ("--loop-io",),
                "Loop devices of the stores: direct I/O (a store behaves like a disk), or buffered through the "
                "host page cache (a second copy of every page; only to measure what direct I/O changes).",
                choices=LOOP_IO,
                show_default=True,
            ),
            Kept("loop I/O", old="direct"),
        ),
    )
    containerd_address: str | None = field(
        default=None,
        metadata=meta(
            Flag(
                ("--containerd-address",),
                "Run containerd's snapshotter drivers (containerd/overlayfs, ...) on the containerd serving this "
                "unix socket instead of a daemon of ours per cell; all is made in a namespace of ours, removed after.",
                metavar="SOCKET",
            ),
            Kept("containerd address", old=None),
        ),
    )
    resume: Path | None = field(
        default=None,
        metadata=meta(
            Flag(
                ("--resume",),
                "Finish an interrupted run: same settings, finished cells kept, the rest run.",
                Path,
                metavar="RESULT",
                exists=True,
            )
        ),
    )
    retry_failed: bool = field(
        default=False,
        metadata=meta(
            Flag(
                ("--retry-failed",),
                "With --resume: run the cells that failed again too (their errors are replaced).",
                kind="flag",
            )
        ),
    )
    spread: bool = field(
        default=False,
        metadata=meta(
            Flag(("--spread",), "With --cluster: each cell once on any host, not on every host.", kind="flag"),
            Kept(old=False),
        ),
    )

    @classmethod
    def from_options(cls, given: Mapping[str, Any]) -> RunConfig:
        """The config of `layerbench run`'s options (by field name, as click gives them), each parsed."""
        values = {}
        for f in dataclasses.fields(cls):
            flag = f.metadata["flag"]
            if f.name in given:
                values[f.name] = flag.parse(given[f.name]) if flag is not None and flag.parse else given[f.name]
        return cls(**values)

    def settings(self, scenarios: list[str], drivers: list[str]) -> dict[str, Any]:
        """The results file's `settings`: every kept setting, with the scenario files and the drivers
        the run resolved its names to."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata["kept"] is not None:
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return {**out, "scenarios": scenarios, "drivers": drivers}

    def resumed(self, settings: Mapping[str, Any], label: str, source: Path) -> RunConfig:
        """The config of the run whose results file kept `settings` (and `label`), to finish it with
        this invocation's results dir and work root; one line if the file lacks a setting it needs."""
        if missing := [f.name for f in _kept() if f.metadata["kept"].required and f.name not in settings]:
            raise UserError(f"{source}: has no run settings to resume from (no {', '.join(missing)})")
        values: dict[str, Any] = {"label": label, "results_dir": self.results_dir, "work_root": self.work_root}
        for f in _kept():
            old = f.metadata["kept"].old
            value = settings.get(f.name, getattr(self, f.name) if old is SAME else old)
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return RunConfig(**values)

    def environment(self, work_root: Path | None) -> RunEnvironment:
        """What the cells act on, on `work_root` (this host's): passed to each cell, shipped to a fleet's."""
        return RunEnvironment(work_root, self.loop_io, self.max_image_bytes)


def _kept() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(RunConfig) if f.metadata["kept"] is not None]
