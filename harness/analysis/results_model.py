"""The typed results model: a run as `RunDocument`, each of its cells as `CellResult`.

The JSON document on disk (docs/results.md, harness/analysis/results.schema.json) is what a
run stores; this is the one record of it that code builds and reads. The runner, the local and
fleet executors and `--resume` build a `RunDocument` and its `CellResult`s; `to_dict` is the
JSON, written once where the file is saved (`results.save`), and `from_dict` reads it back once
where a file is loaded (`results.read_document`, after its migrations and the schema check). A
fleet cell crosses its process boundary as that JSON record. `run_document` takes the JSON
document as `results.read` returns it, a model, or a test's partial document. What tells cells
apart (`CellKey`), a metric's median, a cell's name in a message, a cell's host and backing
(`""` when none) and the slicing of a run by host or by backing each live here once.

Fields the model does not name (a newer writer's) are kept as they were read (`extra`), and
`get` reads any field by its JSON name.
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

from layerbench.units import params_human

__all__ = [
    "SCHEMA_VERSION",
    "CellKey",
    "Unset",
    "UNSET",
    "Metric",
    "CellResult",
    "Record",
    "Machine",
    "Tool",
    "RunDocument",
    "run_document",
    "cell_result",
    "median",
    "params_text",
]


#: the results document's format (docs/results.md); older ones are migrated on reading (results.migrate)
SCHEMA_VERSION = 1


def params_text(params: Mapping[str, Any]) -> str:
    """`k=v;k=v`, sorted by name: a cell's parameters as one string (its key, the CSV's `params`)."""
    return ";".join(f"{k}={params[k]}" for k in sorted(params))


def median(samples: Iterable[float]) -> float | None:
    """The median of `samples` as a float (the mean of the two middle ones for an even count); None for none.
    Every headline value (claims, the verdict, compare, engine overheads) is this."""
    values = list(samples)
    return float(statistics.median(values)) if values else None


class CellKey(NamedTuple):
    """What tells one cell from another: scenario, driver, backing, parameters (`k=v;k=v`) and host,
    in this order; backing and host are `""` when a cell has none (a fleet's cell has a host)."""

    scenario: str
    driver: str
    backing: str
    params: str
    host: str

    @classmethod
    def of(
        cls, scenario: str, driver: str, backing: str | None, params: Mapping[str, Any], host: str | None = None
    ) -> CellKey:
        """The key of a cell from its parts (a planned cell, or one read from a file)."""
        return cls(scenario, driver, backing or "", params_text(params), host or "")

    def any_host(self) -> CellKey:
        """The same cell on whichever host (a cell planned for any host of a fleet)."""
        return self._replace(host="")

    def name(self, human: bool = False, host: bool = True, params_first: bool = False) -> str:
        """The cell in a message, the one way to name one: `copy-up overlay2 on ext4 @ host-a (file_size=4096)`;
        parameters as people write them with `human` (`file_size=4 KiB`); no `@ host` without `host` (a run with
        one host); `params_first`: `copy-up overlay2 file_size=4096 on ext4 @ host-a` (the failed-cells line)."""
        params = params_human(self.params) if human else self.params
        where = (f" on {self.backing}" if self.backing else "") + (f" @ {self.host}" if host and self.host else "")
        if params_first:
            return f"{self.scenario} {self.driver}" + (f" {params}" if params else "") + where
        return f"{self.scenario} {self.driver}{where}" + (f" ({params})" if params else "")


@dataclass(frozen=True)
class Metric:
    """One metric of a cell: its unit and raw samples, in the order taken."""

    unit: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float | None:
        return median(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "samples": list(self.samples)}


class Unset(enum.Enum):
    """A field the JSON record leaves out (where null is a value: `loop_direct_io` of a cell without a loop)."""

    UNSET = "unset"


UNSET = Unset.UNSET

#: a cell's JSON fields in the order a run writes them (a record read keeps its own order)
CELL_FIELDS = (
    "scenario", "driver", "params", "backing", "status", "error", "warmup", "metrics", "outcomes",
    "skipped_at_import", "inspect",
    "time_split_s", "template", "loop_direct_io", "mkfs_options", "image_layers_disk_bytes", "image_bytes",
    "images", "samples", "stop_reason", "ci_half_width", "duration_s", "host",
)  # fmt: skip
_ALWAYS = {"scenario", "driver", "params", "backing", "status", "error", "metrics"}  # the schema requires them
_ATTR = {"outcomes": "outcome_counts", "samples": "sample_count"}  # JSON name -> attribute, where they differ


@dataclass(eq=False)
class CellResult:
    """One cell of a run, as the runner builds it and every reader reads it.

    The fields are the cell's JSON record's (docs/results.md); an optional one is None (`loop_direct_io`:
    UNSET) when the record leaves it out. `outcome_counts` is the record's `outcomes`, `sample_count` its
    `samples`. Fields this model does not name (a newer writer's) are kept in `extra`. `to_dict` is the
    JSON record (in the order a run writes it, or the one it was read in); `from_dict` reads one.
    """

    scenario: str
    driver: str
    params: dict[str, Any]
    backing: str  # "" when none
    status: str = "ok"  # running, ok, error, interrupted
    error: str | None = None
    warmup: int | None = None
    metrics: dict[str, Metric] = field(default_factory=dict)
    outcome_counts: dict[str, dict[str, int]] | None = None
    skipped_at_import: dict[str, Any] | None = None  # {"count": n, "entries": the first 20}: what imports skipped
    inspect: dict[str, Any] | None = None
    time_split_s: dict[str, float] | None = None  # setup, timed, sampling, teardown
    template: bool | None = None
    loop_direct_io: bool | Unset | None = UNSET
    mkfs_options: str | None = None
    image_layers_disk_bytes: list[int] | None = None
    image_bytes: int | None = None
    images: list[dict[str, Any]] | None = None
    sample_count: int | None = None
    stop_reason: str | None = None
    ci_half_width: dict[str, float] | None = None
    duration_s: float | None = None
    host: str = ""  # a fleet cell's host; "" when none
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # the JSON record's own key order, when it was read

    @classmethod
    def from_dict(cls, cell: Mapping[str, Any]) -> CellResult:
        """A cell from its JSON record (missing backing and host read as `""`; missing status as ok)."""
        named = {name: cell[name] for name in CELL_FIELDS if name in cell and name not in _ALWAYS}
        named.pop("host", None)
        return cls(
            scenario=cell["scenario"],
            driver=cell["driver"],
            params=cell.get("params") or {},
            backing=cell.get("backing") or "",
            status=cell.get("status", "ok"),
            error=cell.get("error"),
            metrics={
                name: Metric(data.get("unit", ""), tuple(data.get("samples") or ()))
                for name, data in (cell.get("metrics") or {}).items()
            },
            host=cell.get("host") or "",
            extra={k: v for k, v in cell.items() if k not in CELL_FIELDS},
            order=tuple(cell),
            **{_ATTR.get(k, k): v for k, v in named.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """The cell's JSON record: what the results file holds."""
        fields = {name: self._json(name) for name in CELL_FIELDS}
        # a store without a loop says so: loop_direct_io null (UNSET: a cell that opened no store)
        kept = {*_ALWAYS, *(("loop_direct_io",) if self.loop_direct_io is None else ())}
        out = {k: v for k, v in fields.items() if k in kept or (v is not None and v is not UNSET)}
        out.update(self.extra)
        if self.order:
            out = {k: out[k] for k in (*self.order, *out) if k in out}
        return out

    def _json(self, name: str) -> Any:
        if name == "metrics":
            return {m: data.to_dict() for m, data in self.metrics.items()}
        if name == "host":
            return self.host or None
        return getattr(self, _ATTR.get(name, name))

    @property
    def record(self) -> dict[str, Any]:
        """The cell's JSON record (`to_dict`)."""
        return self.to_dict()

    @property
    def key(self) -> CellKey:
        return CellKey(self.scenario, self.driver, self.backing, self.params_text, self.host)

    @property
    def params_text(self) -> str:
        return params_text(self.params)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def series(self) -> tuple[str, str]:
        """(driver, backing): a column of the verdict, a line of a plot."""
        return self.driver, self.backing

    def samples(self, metric: str) -> list[float]:
        """The raw samples of `metric` as floats (empty when the cell did not measure it)."""
        found = self.metrics.get(metric)
        return [float(x) for x in found.samples] if found else []

    def median(self, metric: str) -> float | None:
        """The median of `metric` (None when the cell did not measure it)."""
        found = self.metrics.get(metric)
        return found.median if found else None

    def get(self, name: str, default: Any = None) -> Any:
        """A field of the cell's JSON record by its JSON name (`image_bytes`, `samples`, ...); `default`
        when the record leaves it out."""
        if name in CELL_FIELDS:
            value = self._json(name)
            return default if value is None or value is UNSET else value
        return self.extra.get(name, default)

    @property
    def outcomes(self) -> Mapping[str, Mapping[str, int]]:
        """Labelled outcome counts (`{"stat": {"ENOENT": 3}}`), empty when none."""
        return self.outcome_counts or {}

    def name(self, human: bool = False, host: bool = True, params_first: bool = False) -> str:
        """The cell in a message (CellKey.name)."""
        return self.key.name(human, host, params_first)


class Record(Mapping[str, Any]):
    """A nested record of the document (`machine`, `tool`), typed: its named fields are dataclass fields (None
    when the JSON leaves one out), the keys it does not name (an older or a newer writer's) are kept in `extra`,
    and `order` is the JSON's own keys in order when it was read. `to_dict` writes back what was read, byte for
    byte: the keys read (a null too) in their order, then fields set since, then the extra keys. It reads by key
    too, as the dict it was (`machine["name"]`, `.get`, `dict(machine)`, `**machine`)."""

    extra: dict[str, Any]
    order: tuple[str, ...]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The JSON keys the record names, in the order a run writes them."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "order"))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The record of its JSON object (one read from a file, or a writer's own dict)."""
        names = cls.names()
        named = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**named, extra=extra, order=tuple(data))  # type: ignore[call-arg]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the keys read in their order (a null kept), then fields set since, then `extra`."""
        named = {k: getattr(self, k) for k in self.names()}
        out = {k: v for k, v in named.items() if v is not None or k in self.order}
        out.update(self.extra)
        return {k: out[k] for k in (*self.order, *out) if k in out}

    def __getitem__(self, name: str) -> Any:
        return self.to_dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=False)
class Machine(Record):
    """The machine a run ran on (docs/results.md `machine`; `run/machine.py` `machine_info` writes it): `disk`
    is what the work root is on (files since issue 21)."""

    name: str | None = None
    kernel: str | None = None
    arch: str | None = None
    cpu: str | None = None
    cpus: int | None = None
    memory_bytes: int | None = None
    python: str | None = None
    root: bool | None = None
    disk: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Tool(Record):
    """The layerbench that wrote a run (docs/results.md `tool`): `git_commit` with `-dirty` for a changed tree."""

    name: str | None = None
    version: str | None = None
    git_commit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()


def _record(cls: type[Record], value: Mapping[str, Any] | None) -> Any:
    """`value` as the record `cls` (a record given is kept as it is; none: an empty one)."""
    return value if isinstance(value, cls) else cls.from_dict(value or {})


#: the document's JSON fields in the order a run writes them (a document read keeps its own order)
RUN_FIELDS = (
    "schema_version", "label", "started_utc", "finished_utc", "status", "machine", "tool", "run", "helpers",
    "drivers", "scenarios", "cells", "work_root", "overhead", "settings", "hosts",
)  # fmt: skip
_RUN_ALWAYS = {"schema_version", "label", "started_utc", "finished_utc", "status", "machine", "tool", "helpers"}
_RUN_ALWAYS |= {"drivers", "scenarios", "cells"}
_RUN_ATTR = {"hosts": "fleet_hosts"}  # JSON name -> attribute, where they differ


@dataclass(eq=False)
class RunDocument:
    """One run (or several merged), as the runner builds it and every reader reads it.

    The fields are the results document's (docs/results.md): `machine` and `tool` are records (`Machine`,
    `Tool`: typed fields, read by key too, unknown keys kept); `run`, `work_root`, `overhead`,
    `settings` and `hosts` (`fleet_hosts`) are None when the document leaves them out; fields this model does not
    name are kept in `extra`. `to_dict` is the JSON document (in the order a run writes it, or the
    one it was read in); `from_dict` reads one, after `results.read` has migrated and checked it.
    """

    cells: list[CellResult] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    label: str = ""
    started_utc: str = ""
    finished_utc: str | None = None
    status: str = "running"  # running, finished, interrupted
    machine: Machine = field(default_factory=Machine)
    tool: Tool = field(default_factory=Tool)
    run: dict[str, Any] | None = None  # the process writing it (results.run_record)
    helpers: dict[str, Any] = field(default_factory=dict)  # tool -> version (or null)
    drivers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> style, available, reason
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    work_root: str | None = None
    overhead: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    fleet_hosts: dict[str, dict[str, Any]] | None = None  # a fleet run's `hosts`: each host's record
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # the JSON document's own key order, when it was read

    def __post_init__(self) -> None:  # a writer's (or a script's) machine and tool as dicts: the records
        self.machine, self.tool = _record(Machine, self.machine), _record(Tool, self.tool)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RunDocument:
        """A run from its JSON document (a partial one, as tests write, too)."""
        named = {_RUN_ATTR.get(k, k): doc[k] for k in RUN_FIELDS if k in doc and k != "cells"}
        return cls(
            cells=[CellResult.from_dict(c) for c in doc.get("cells") or ()],
            **named,
            extra={k: v for k, v in doc.items() if k not in RUN_FIELDS},
            order=tuple(doc),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: what the results file holds (a slice's holds the slice's cells)."""
        fields = {
            k: [c.to_dict() for c in self.cells] if k == "cells" else getattr(self, _RUN_ATTR.get(k, k))
            for k in RUN_FIELDS
        }
        fields["machine"], fields["tool"] = self.machine.to_dict(), self.tool.to_dict()
        out = {k: v for k, v in fields.items() if k in _RUN_ALWAYS or v is not None}
        out.update(self.extra)
        if self.order:
            out = {k: out[k] for k in (*self.order, *out) if k in out}
        return out

    def with_cells(self, cells: Iterable[CellResult]) -> RunDocument:
        """The same run with only `cells` (a slice)."""
        return dataclasses.replace(self, cells=list(cells))

    @property
    def timer_ns(self) -> int:
        """The timer's own cost on this machine (`overhead.timer_ns`; 0 when not measured)."""
        return int((self.overhead or {}).get("timer_ns", 0))

    def add(self, cell: CellResult) -> None:
        """A cell's result, as it finishes."""
        self.cells.append(cell)

    def end(self, status: str, when: str) -> None:
        """The run ended as `status` (finished, interrupted) at `when` (UTC)."""
        self.status, self.finished_utc = status, when

    def style(self, driver: str) -> str:
        """A driver's style (union, snapshot, copy, ...), `""` when the document does not say."""
        return str(self.drivers.get(driver, {}).get("style", ""))

    def ok(self, scenario: str | None = None, **params: Any) -> list[CellResult]:
        """The ok cells (of `scenario`, with these parameter values when given)."""
        return [
            c
            for c in self.cells
            if c.ok
            and (scenario is None or c.scenario == scenario)
            and all(c.params.get(k) == v for k, v in params.items())
        ]

    @property
    def hosts(self) -> list[str]:
        """Every cell's host by name (`""` for cells without one)."""
        return sorted({c.host for c in self.cells})

    @property
    def several_hosts(self) -> bool:
        """Did the cells run on more than one host (a fleet run)?"""
        return len(self.hosts) > 1

    @property
    def swept_backings(self) -> bool:
        """Does some driver run on more than one backing filesystem (a backing sweep)?"""
        return any(len(b) > 1 for b in self._backings().values())

    def _backings(self) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for cell in self.cells:
            seen.setdefault(cell.driver, set()).add(cell.backing)
        return seen

    def by_host(self) -> list[tuple[str, RunDocument]]:
        """The run once per host of a fleet run with several hosts (by name), else once whole (host `""`)."""
        hosts = self.hosts
        if len(hosts) < 2:
            return [("", self)]
        return [(h, self.with_cells(c for c in self.cells if c.host == h)) for h in hosts]

    def by_backing(self) -> list[tuple[str, RunDocument]]:
        """The run once per backing filesystem of a backing sweep, else once whole (backing `""`).

        In a sweep (a driver ran on several backings), each part holds that backing's cells
        and the cells of drivers that ran on one backing only, so nothing is compared across
        filesystems and nothing measured is left out.
        """
        seen = self._backings()
        swept = sorted({b for backings in seen.values() if len(backings) > 1 for b in backings})
        if not swept:
            return [("", self)]
        return [
            (b, self.with_cells(c for c in self.cells if c.backing == b or len(seen[c.driver]) == 1)) for b in swept
        ]


def run_document(doc: RunDocument | Mapping[str, Any]) -> RunDocument:
    """The builder: a `RunDocument` of a JSON results document (one given is returned as it is)."""
    return doc if isinstance(doc, RunDocument) else RunDocument.from_dict(doc)


def cell_result(cell: CellResult | Mapping[str, Any]) -> CellResult:
    """A `CellResult` of a cell's JSON record (one given is returned as it is)."""
    return cell if isinstance(cell, CellResult) else CellResult.from_dict(cell)
