"""Results files: one JSON document per run, rewritten atomically after every cell.

docs/results.md documents the schema. `load` turns any set of files into one tidy
pandas DataFrame.
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbench.analysis.results_model import (
    SCHEMA_VERSION,
    CellKey,
    Machine,
    RunDocument,
    Tool,
    params_text,
    run_document,
)
from layerbench.analysis.stats import SUMMARY_FIELDS, summarize
from layerbench.errors import UserError

if TYPE_CHECKING:  # both are imported where used: a cell's process needs neither (0.7 s of its start)
    import jsonschema
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION",
    "new_document",
    "new_run",
    "save",
    "read",
    "read_document",
    "tidy",
    "load",
    "params_text",
    "unit_of",
    "MIGRATIONS",
    "migrate",
    "migrate_0_to_1",
    "schema",
    "validate",
    "CellKey",
    "result_paths",
    "to_csv",
    "run_record",
    "run_state",
]


def __getattr__(name: str) -> Any:
    """`cell_key`, the key of a cell's JSON record, is deprecated: a cell read with `read_document` has its
    `key` (`CellResult.key`), a planned one `CellKey.of(...)`."""
    if name == "cell_key":
        warnings.warn(
            "layerbench.analysis.results.cell_key is deprecated; read the file with results.read_document and "
            "use CellResult.key (or CellKey.of for a cell's parts)",
            DeprecationWarning,
            stacklevel=2,
        )
        return _cell_key
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cell_key(cell: Mapping[str, Any]) -> CellKey:
    """The key of a cell's JSON record (deprecated: `CellResult.key`)."""
    return CellKey.of(cell["scenario"], cell["driver"], cell.get("backing"), cell["params"], cell.get("host"))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unit_of(metric: str) -> str:
    """The unit is the metric name's suffix: `copy_up_ns` is in ns, `disk_bytes` in bytes, `read_fraction`
    a fraction (0 to 1, shown as a percentage)."""
    if metric.endswith("_ns"):
        return "ns"
    if metric.endswith("_bytes"):
        return "bytes"
    if metric.endswith("_fraction"):
        return "fraction"
    return "count"


def new_run(label: str, machine: Mapping[str, Any], tool: Mapping[str, Any]) -> RunDocument:
    """A new run's document, started now by this process: no cells yet. `machine` and `tool` as
    `run/machine.py` describes them (its dicts, or the records)."""
    return RunDocument(
        label=label,
        started_utc=utc_now(),
        machine=Machine.from_dict(machine),
        tool=Tool.from_dict(tool),
        run=run_record(),
    )


def new_document(label: str, machine: Mapping[str, Any], tool: Mapping[str, Any]) -> dict[str, Any]:
    """`new_run`'s JSON document."""
    return new_run(label, machine, tool).to_dict()


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot (/proc/PID/stat field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def run_record() -> dict[str, Any]:
    """This process as the `run` record of the document it writes: a pid alone is reused, a pid
    with the boot id and its start time is not."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot_id": _boot_id(), "start_ticks": _start_ticks(pid) or 0}


def run_state(doc: RunDocument | Mapping[str, Any]) -> str:
    """The run's status, with a `running` run whose process is gone shown as `died`."""
    run = run_document(doc)
    record = run.run
    if run.status != "running" or record is None:
        return run.status
    if record["boot_id"] == _boot_id():
        alive = _start_ticks(record["pid"]) == record["start_ticks"]
    elif record["host"] == socket.gethostname():
        alive = False  # the machine rebooted since
    else:
        return f"running (on {record['host']})"
    if alive:
        return "running"
    root = run.work_root
    return f"died (run layerbench cleanup --work-root {root})" if root else "died (run layerbench cleanup)"


def save(doc: RunDocument | Mapping[str, Any], path: Path) -> None:
    """Write `doc` (its JSON document, `RunDocument.to_dict`) to `path` atomically: a temporary file,
    fsync, rename."""
    if isinstance(doc, RunDocument):
        doc = doc.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused where it is no finite float (`1e400` reads as inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def _float_sized_int(text: str) -> int:
    """A JSON integer, refused where no float holds it (`1` and 400 zeros: every statistic would overflow)."""
    if len(text.lstrip("-")) > 308:  # 10**308 is the order of the largest double; decided before int() parses
        raise ValueError(f"{text[:40]}... ({len(text)} digits) is larger than any number a results file holds")
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise ValueError(f"{text[:40]}... is larger than any number a results file holds") from None
    return value


#: the largest results file read (a run of thousands of cells with their samples is a few MiB)
MAX_RESULTS_BYTES = 256 << 20


def _read_bounded(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_RESULTS_BYTES: opened without blocking (a fifo
    named `*.json` returns at once) and its type checked on the descriptor (a symlink to /dev/zero
    is a character device), so no read hangs or grows without bound."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: not a results file: not a regular file")
        if st.st_size > MAX_RESULTS_BYTES:
            raise UserError(f"{path}: not a results file: {st.st_size} bytes, over the limit of {MAX_RESULTS_BYTES}")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_RESULTS_BYTES:  # grew while read
                raise UserError(f"{path}: not a results file: over the limit of {MAX_RESULTS_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read(path: Path) -> dict[str, Any]:
    """Read one results file, migrated and validated; refuse one that is not ours, newer than this
    code or malformed, in one line naming the file and the field."""
    try:
        doc = json.loads(
            _read_bounded(Path(path)).decode(),
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_float_sized_int,
        )
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"{path}: not a readable results file: {exc}") from None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if not isinstance(version, int):
        raise UserError(f"{path}: not a layerbench results file (no integer schema_version)")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: schema_version {version} is newer than this layerbench understands "
            f"({SCHEMA_VERSION}); upgrade layerbench"
        )
    try:
        doc = migrate(doc, path)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UserError(
            f"{path}: a schema_version {version} file that cannot be migrated: {type(exc).__name__}: {exc}"
        ) from None
    validate(doc, path)
    return doc


def read_document(path: Path) -> RunDocument:
    """`read`'s document as the model: migrated and checked, then parsed once."""
    return RunDocument.from_dict(read(path))


def migrate_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """Schema 0 (pre-release) to 1: see docs/results.md, "Migrations".

    Schema 0 kept each metric as a bare list of samples, each scenario as its
    sha256 string, and had no `helpers`, `status` or `finished_utc` (a file was
    written once, at the end of a run).
    """
    out = {k: v for k, v in doc.items() if k not in ("schema_version", "scenarios", "cells")}
    cells = [
        {
            "backing": "dir",
            "error": None,
            **cell,
            "metrics": {m: {"unit": unit_of(m), "samples": list(v)} for m, v in cell.get("metrics", {}).items()},
        }
        for cell in doc.get("cells", [])
    ]
    scenarios = {}
    for name, sha in doc.get("scenarios", {}).items():
        swept: dict[str, list[Any]] = {}
        for cell in cells:
            if cell["scenario"] == name:
                for k, v in cell["params"].items():
                    if v not in swept.setdefault(k, []):
                        swept[k].append(v)
        scenarios[name] = {"path": None, "sha256": sha, "params": swept}
    return {
        "schema_version": 1,
        **out,
        "finished_utc": doc.get("finished_utc", doc.get("started_utc")),
        "status": doc.get("status", "finished"),
        "helpers": doc.get("helpers", {}),
        "scenarios": scenarios,
        "cells": cells,
    }


#: schema_version -> the function that lifts a document from it to the next one
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: migrate_0_to_1}


def migrate(doc: dict[str, Any], path: Path | str = "document") -> dict[str, Any]:
    """Lift `doc` to SCHEMA_VERSION one explicit step at a time."""
    while doc["schema_version"] < SCHEMA_VERSION:
        step = MIGRATIONS.get(doc["schema_version"])
        if step is None:
            raise UserError(f"{path}: schema_version {doc['schema_version']} is too old to migrate")
        doc = step(doc)
    return doc


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a results file, shipped as harness/analysis/results.schema.json."""
    text = resources.files(__package__).joinpath("results.schema.json").read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def validate(doc: RunDocument | dict[str, Any], source: Path | str = "results document") -> None:
    """Raise UserError naming `source` and the first field where `doc` (or a model's JSON document) breaks
    the schema: `results/x.json: cells[3].metrics: missing`."""
    import jsonschema

    if isinstance(doc, RunDocument):
        doc = doc.to_dict()

    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is None:
        _check_param_kinds(doc, source)
        return
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        where, what = f"{where}.{missing}".lstrip("."), "missing"
    else:
        what = f"{_expected(error.validator, error.validator_value)}, got {_short(error.instance)}"
    raise UserError(f"{source}: {where or '(top level)'}: {what}")


def _check_param_kinds(doc: dict[str, Any], source: Path | str) -> None:
    """A parameter is a number in every cell of its scenario or a string in every one (reports plot numbers)."""
    first: dict[tuple[str, str], tuple[int, str]] = {}
    for i, cell in enumerate(doc["cells"]):
        for name, value in cell["params"].items():
            kind = "a string" if isinstance(value, str) else "a number"
            j, other = first.setdefault((cell["scenario"], name), (i, kind))
            if other != kind:
                raise UserError(
                    f"{source}: cells[{i}].params.{name}: {kind} ({_short(value)}) where cells[{j}] "
                    f"of scenario {cell['scenario']} has {other}"
                )


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def _expected(rule: Any, value: Any) -> str:
    if rule == "type":
        return "expected " + (value if isinstance(value, str) else " or ".join(value))
    if rule == "enum":
        return "expected one of " + ", ".join(json.dumps(v) for v in value)
    if rule == "const":
        return f"expected {json.dumps(value)}"
    if rule == "pattern":
        return f"expected a string matching {value}"
    if rule == "minimum":
        return f"expected a number >= {value}"
    return f"expected what the schema's {rule!r} allows"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def tidy(docs: Iterable[RunDocument | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario x driver x backing x host x parameter set x metric, summarised."""
    rows = []
    for doc in docs:
        for cell in run_document(doc).cells:
            for metric, data in cell.metrics.items():
                rows.append(
                    {
                        "scenario": cell.scenario,
                        "driver": cell.driver,
                        "backing": cell.backing,
                        "host": cell.host,
                        "params": cell.params_text,
                        "metric": metric,
                        "unit": data.unit,
                        **summarize(data.samples),
                    }
                )
    return rows


#: the columns of `load` before the parameters (one column each) and the metric
RUN_COLUMNS = ["run", "run_id", "started_utc", "kernel", "host"]
KEY_COLUMNS = ["scenario", "driver", "backing", "params"]


def param_column(name: str) -> str:
    """A parameter's column: its name, or `param_<name>` when that is already a column's name."""
    taken = {*RUN_COLUMNS, *KEY_COLUMNS, "metric", "unit", "sample", "value", *SUMMARY_FIELDS}
    return f"param_{name}" if name in taken else name


def _frame(doc: dict[str, Any], raw: bool) -> pd.DataFrame:
    """One run as rows: its cells' keys, one column per parameter, then the summary (or each sample)."""
    import pandas as pd

    host = (doc.get("machine") or {}).get("name") or ""
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    for cell in run_document(doc).cells:
        key = {
            "host": cell.host or host,
            "scenario": cell.scenario,
            "driver": cell.driver,
            "backing": cell.backing,
            "params": cell.params_text,
            **{param_column(k): v for k, v in sorted(cell.params.items())},
        }
        names.update(dict.fromkeys(param_column(k) for k in sorted(cell.params)))
        for metric, data in cell.metrics.items():
            if raw:
                rows += [
                    {**key, "metric": metric, "unit": data.unit, "sample": i, "value": float(v)}
                    for i, v in enumerate(data.samples)
                ]
            else:
                stats = summarize(data.samples)
                rows.append({**key, "metric": metric, "unit": data.unit, **{k: stats[k] for k in SUMMARY_FIELDS}})
    tail = ["sample", "value"] if raw else list(SUMMARY_FIELDS)
    frame = pd.DataFrame(rows, columns=["host", *KEY_COLUMNS, *names, "metric", "unit", *tail])
    return _whole(frame, list(names))


def _whole(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Parameter columns of whole numbers as pandas' nullable Int64, where a row lacks the parameter too
    (a float64 column would read 1000.0)."""
    import pandas as pd

    def whole(v: Any) -> bool:
        if isinstance(v, float) and not pd.isna(v):
            return v.is_integer()
        return (isinstance(v, int) and not isinstance(v, bool)) or pd.isna(v)

    for name in names:
        if frame[name].dtype != "Int64" and frame[name].map(whole).all() and frame[name].notna().any():
            frame[name] = frame[name].astype("Int64")
    return frame


def result_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory stands for every results file (`*.json`, not hidden) under it."""
    given = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for path in map(Path, given):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
            if not found:
                raise UserError(f"{path}: no results files (*.json) in this directory")
            out += found
        else:
            out.append(path)
    return out


def load(paths: str | Path | Iterable[str | Path], raw: bool = False) -> pd.DataFrame:
    """Every cell's metrics of the given results files (or directories of them) as one tidy DataFrame.

    One row per run x cell x metric with the run (`run` label, `run_id` file name,
    `started_utc` as a UTC timestamp, `kernel`, `host`), the cell's keys (`scenario`,
    `driver`, `backing`, `params` and one typed column per parameter), `metric`, `unit`
    and the summary; with `raw=True`, one row per sample (`sample` index, `value`) instead.
    """
    import pandas as pd

    frames = []
    for path in result_paths(paths):
        doc = read(path)
        frame = _frame(doc, raw)
        frame.insert(0, "run", doc["label"])
        frame.insert(1, "run_id", path.stem)
        frame.insert(2, "started_utc", pd.to_datetime(doc["started_utc"], utc=True))
        frame.insert(3, "kernel", (doc.get("machine") or {}).get("kernel") or "")
        frames.append(frame)
    if not frames:
        tail = ["sample", "value"] if raw else list(SUMMARY_FIELDS)
        return pd.DataFrame(columns=[*RUN_COLUMNS, *KEY_COLUMNS, "metric", "unit", *tail])
    frame = pd.concat(frames, ignore_index=True)
    known = set(RUN_COLUMNS) | set(KEY_COLUMNS) | {"metric", "unit", "sample", "value", *SUMMARY_FIELDS}
    return _whole(frame, [c for c in frame.columns if c not in known])  # a run without a parameter: NaN


def to_csv(doc: dict[str, Any]) -> str:
    """One run as CSV: a row per cell and metric, with `backing`, `params` and a column per parameter."""
    return _frame(doc, raw=False).to_csv(index=False)
