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
           "MIGRATIONS", "migrate", "migrate_0_to_1", "schema", "validate"]

SCHEMA_VERSION = 1
TIDY_COLUMNS = ["scenario", "driver", "params", "metric", "unit", *SUMMARY_FIELDS]


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


def tidy(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario x driver x parameter set x metric, summarised."""
    rows = []
    for doc in docs:
        for cell in doc["cells"]:
            for metric, data in cell.get("metrics", {}).items():
                rows.append({
                    "scenario": cell["scenario"],
                    "driver": cell["driver"],
                    "params": params_text(cell["params"]),
                    "metric": metric,
                    "unit": data["unit"],
                    **summarize(data["samples"]),
                })
    return rows


def load(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every cell's summarised metrics of the given results files as one DataFrame."""
    frames = []
    for path in paths:
        doc = read(Path(path))
        frame = pd.DataFrame(tidy([doc]), columns=TIDY_COLUMNS)
        frame.insert(0, "run", doc["label"])
        frame.insert(1, "started_utc", doc["started_utc"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run", "started_utc", *TIDY_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def to_csv(doc: dict[str, Any]) -> str:
    """The tidy table of one run as CSV text."""
    return pd.DataFrame(tidy([doc]), columns=TIDY_COLUMNS).to_csv(index=False)
