"""`--resume`: finish an interrupted run with the settings it was made with, refusing any other."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from layerbench.analysis import results
from layerbench.analysis.results_model import RunDocument
from layerbench.errors import UserError
from layerbench.run.config import RunConfig
from layerbench.scenario import resolve_scenarios

__all__ = ["resume"]


def resume(config: RunConfig) -> tuple[RunConfig, RunDocument, Path]:
    """The config, document and path of an interrupted run, to finish it; with `retry_failed`,
    the failed cells are left out of the document, so they run again."""
    assert config.resume is not None
    path = config.resume
    doc = results.read_document(path)
    resumed = config.resumed(doc.settings or {}, doc.label, path)
    if doc.run is not None and results.run_state(doc) == "running":
        raise UserError(f"--resume {path}: the run is still going (pid {doc.run['pid']}); let it finish")
    _refuse_changed_settings(config, doc, path)
    for s in resolve_scenarios(resumed.scenarios, resumed.overrides, resumed.quick, resumed.long):
        if doc.scenarios.get(s.name, {}).get("sha256") != s.sha256:
            raise UserError(
                f"{path}: scenario {s.name!r} changed since the run started ({s.path}); start a new run instead"
            )
    kept = ("ok",) if config.retry_failed else ("ok", "error")
    failed = sum(c.status == "error" for c in doc.cells)
    doc.cells = [c for c in doc.cells if c.status in kept]
    if config.retry_failed and failed and doc.status == "finished":
        doc.status = "interrupted"  # its failed cells are to run again: not finished any more
    return resumed, doc, path


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


def _refuse_changed_settings(config: RunConfig, doc: RunDocument, path: Path) -> None:
    """`--resume` finishes a run with its own settings: refuse any other one given, naming what the run had."""
    defaults, settings = RunConfig(), doc.settings or {}
    changed: list[tuple[str, str]] = []  # (option, "what the run was made with")
    if config.scenarios:
        asked = sorted(os.path.realpath(s.path) for s in resolve_scenarios(config.scenarios))
        if asked != sorted(os.path.realpath(p) for p in settings["scenarios"]):
            changed.append(("the scenario arguments", f"scenarios {_text(list(doc.scenarios))}"))
    for f in dataclasses.fields(RunConfig):
        kept, name = f.metadata["kept"], f.name
        if kept is None or kept.what is None:
            continue
        given, default = getattr(config, name), getattr(defaults, name)
        had = settings.get(name, default)  # older files lack the newer settings
        if _plain(given) != _plain(default) and _plain(given) != _plain(had):
            changed.append((f.metadata["flag"].name, f"{kept.what} {_text(had)}"))
    if config.label != defaults.label and config.label != doc.label:
        changed.append(("--label", f"label {doc.label}"))
    if config.results_dir != defaults.results_dir and config.results_dir.resolve() not in path.resolve().parents:
        changed.append(("--results-dir", f"its results in {path.parent}"))
    if changed:
        raise UserError(
            f"--resume: the run was made with {' and '.join(w for _, w in changed)}; "
            f"drop {' and '.join(o for o, _ in changed)} or start a new run"
        )
