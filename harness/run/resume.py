"""`--resume`: finish an interrupted run with the settings it was made with, refusing any other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layerbench.analysis import results
from layerbench.errors import UserError
from layerbench.run.plan import RunConfig
from layerbench.scenario import resolve_scenarios

__all__ = ["resume", "cell_key"]


def cell_key(
    scenario: str, driver: str, params: dict[str, Any], backing_fs: str, host: str | None = None
) -> tuple[str, str, str, str, str | None]:
    """A cell's identity in a results file, to leave out on resume what is done (host None: any host)."""
    return scenario, driver, results.params_text(params), backing_fs, host


def resume(config: RunConfig) -> tuple[RunConfig, dict[str, Any], Path]:
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
        overlap_teardown=settings.get("overlap_teardown", False),
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
    "overlap_teardown": ("--overlap-teardown", "overlapped teardown"),
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
