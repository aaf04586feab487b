"""The package's shape: one identity per class, no import cycles, arrows pointing down."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import layerbench

HARNESS = Path(layerbench.__file__).parent
DRIVERS = HARNESS.parent / "drivers"

#: who may import whom, by top-level group: a group imports only groups listed for it
#: (and the top modules: driver, errors, hookspecs, plugins, scenario)
BELOW: dict[str, set[str]] = {
    "kernel": set(),
    "images": {"kernel"},
    "analysis": {"kernel"},
    "run": {"kernel", "images", "analysis"},
    "testing": {"kernel", "images", "run", "analysis"},
    "report": {"analysis"},
    "drivers": {"kernel", "images", "run"},  # an engine driver packs a layer for its engine (images/layer_pack)
}


def _module_name(path: Path) -> str:
    if path.is_relative_to(DRIVERS):
        parts = ["layerbench", "drivers", *path.relative_to(DRIVERS).with_suffix("").parts]
    else:
        parts = ["layerbench", *path.relative_to(HARNESS).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [*HARNESS.rglob("*.py"), *DRIVERS.rglob("*.py")]
    return {_module_name(p): p for p in files}


def _top_level_imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `path` imports when it is imported (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    body = [n for n in tree.body if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _top_level_imports(path, known) - {name} for name, path in mods.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _group(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1] if len(parts) > 2 or parts[1] in BELOW or parts[1] == "cli" else None


def test_arrows_point_down() -> None:
    """cli sits on top; nothing imports it; each group imports only the groups below it."""
    wrong = []
    for module, deps in _graph().items():
        if module == "layerbench.__main__":  # `python -m layerbench` is the CLI
            continue
        mine = _group(module)
        for dep in deps:
            theirs = _group(dep)
            if theirs is None or theirs == mine:
                continue
            if theirs == "cli" or (mine in BELOW and theirs not in BELOW[mine]):
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports against the layering (docs/architecture.md): " + "; ".join(sorted(wrong))


def test_one_identity_per_class_and_the_old_names_warn() -> None:
    from layerbench.driver import Driver

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old_driver = importlib.import_module("layerbench.harness.driver")
        old_runner = importlib.import_module("layerbench.harness.runner")
        from layerbench.harness import results as old_results
    assert old_driver.Driver is Driver is layerbench.Driver
    assert old_runner is importlib.import_module("layerbench.run.runner")
    assert old_results is importlib.import_module("layerbench.analysis.results")
    assert old_runner.__spec__ is not None and old_runner.__spec__.name == "layerbench.run.runner"
    assert any(
        "layerbench.harness.runner is deprecated; import layerbench.run.runner" in str(w.message) for w in caught
    )
