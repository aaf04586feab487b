"""Results files: one JSON document per run, rewritten atomically after every cell.

docs/results.md documents the schema. `load` turns any set of files into one tidy
pandas DataFrame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import UserError
from .stats import SUMMARY_FIELDS, summarize

__all__ = ["SCHEMA_VERSION", "new_document", "save", "read", "tidy", "load", "params_text", "unit_of",
           "MIGRATIONS", "migrate", "migrate_0_to_1", "schema", "validate", "cell_key", "result_paths", "to_csv"]

SCHEMA_VERSION = 1


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def unit_of(metric: str) -> str:
    """The unit is the metric name's suffix: `copy_up_ns` is in ns, `disk_bytes` in bytes."""
    if metric.endswith("_ns"):
        return "ns"
    if metric.endswith("_bytes"):
        return "bytes"
    return "count"


def params_text(params: dict[str, Any]) -> str:
    """`k=v;k=v`, sorted by name."""
    return ";".join(f"{k}={params[k]}" for k in sorted(params))


def new_document(label: str, machine: dict[str, Any], tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "label": label,
        "started_utc": utc_now(),
        "finished_utc": None,
        "status": "running",
        "machine": machine,
        "tool": tool,
        "helpers": {},
        "drivers": {},
        "scenarios": {},
        "cells": [],
    }


def save(doc: dict[str, Any], path: Path) -> None:
    """Write `doc` to `path` atomically: a temporary file, fsync, rename."""
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


def read(path: Path) -> dict[str, Any]:
    """Read one results file; refuse one that is not ours or newer than this code."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable results file: {exc}") from None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if not isinstance(version, int):
        raise UserError(f"{path}: not a layerbench results file (no integer schema_version)")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: schema_version {version} is newer than this layerbench understands "
            f"({SCHEMA_VERSION}); upgrade layerbench"
        )
    return migrate(doc, path)


def migrate_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """Schema 0 (pre-release) to 1: see docs/results.md, "Migrations".

    Schema 0 kept each metric as a bare list of samples, each scenario as its
    sha256 string, and had no `helpers`, `status` or `finished_utc` (a file was
    written once, at the end of a run).
    """
    out = {k: v for k, v in doc.items() if k not in ("schema_version", "scenarios", "cells")}
    cells = [
        {"backing": "dir", "error": None, **cell,
         "metrics": {m: {"unit": unit_of(m), "samples": list(v)} for m, v in cell.get("metrics", {}).items()}}
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
    return {"schema_version": 1, **out, "finished_utc": doc.get("finished_utc", doc.get("started_utc")),
            "status": doc.get("status", "finished"), "helpers": doc.get("helpers", {}),
            "scenarios": scenarios, "cells": cells}


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
    """The JSON Schema (draft 2020-12) of a results file, shipped as harness/results.schema.json."""
    text = resources.files(__package__).joinpath("results.schema.json").read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def validate(doc: dict[str, Any]) -> None:
    """Raise UserError naming the first place `doc` breaks the schema (needs `jsonschema`)."""
    import jsonschema  # a test dependency: only the tests and tools that check files need it

    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise UserError(f"results document does not match the schema at {where}: {error.message}")


def cell_key(cell: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """What tells one cell from another: scenario, driver, backing, parameters (`k=v;k=v`) and host.

    `host` is the cell's own `host` key when a document has one, else empty.
    """
    return (cell["scenario"], cell["driver"], cell.get("backing") or "", params_text(cell["params"]),
            cell.get("host") or "")


def tidy(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario x driver x backing x parameter set x metric, summarised."""
    rows = []
    for doc in docs:
        for cell in doc["cells"]:
            for metric, data in cell.get("metrics", {}).items():
                rows.append({
                    "scenario": cell["scenario"],
                    "driver": cell["driver"],
                    "backing": cell.get("backing") or "",
                    "params": params_text(cell["params"]),
                    "metric": metric,
                    "unit": data["unit"],
                    **summarize(data["samples"]),
                })
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
    host = (doc.get("machine") or {}).get("name") or ""
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    for cell in doc["cells"]:
        key = {"host": cell.get("host") or host, "scenario": cell["scenario"], "driver": cell["driver"],
               "backing": cell.get("backing") or "", "params": params_text(cell["params"]),
               **{param_column(k): v for k, v in sorted(cell["params"].items())}}
        names.update(dict.fromkeys(param_column(k) for k in sorted(cell["params"])))
        for metric, data in cell.get("metrics", {}).items():
            if raw:
                rows += [{**key, "metric": metric, "unit": data["unit"], "sample": i, "value": float(v)}
                         for i, v in enumerate(data["samples"])]
            else:
                stats = summarize(data["samples"])
                rows.append({**key, "metric": metric, "unit": data["unit"], **{k: stats[k] for k in SUMMARY_FIELDS}})
    tail = ["sample", "value"] if raw else list(SUMMARY_FIELDS)
    frame = pd.DataFrame(rows, columns=["host", *KEY_COLUMNS, *names, "metric", "unit", *tail])
    for name in names:  # whole numbers stay whole where a cell lacks the parameter (pandas' nullable Int64)
        if frame[name].map(lambda v: isinstance(v, int) and not isinstance(v, bool) or pd.isna(v)).all():
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
    return pd.concat(frames, ignore_index=True)


def to_csv(doc: dict[str, Any]) -> str:
    """One run as CSV: a row per cell and metric, with `backing`, `params` and a column per parameter."""
    return _frame(doc, raw=False).to_csv(index=False)
