"""The package's shape: one identity per class, no import cycles, arrows pointing down."""

from __future__ import annotations

import ast
import importlib
import itertools
import subprocess
import sys
import warnings
from pathlib import Path

import layerbench

HARNESS = Path(layerbench.__file__).parent
DRIVERS = HARNESS.parent / "drivers"

#: who may import whom, by top-level group: a group imports only groups listed for it
#: (and the top modules: driver, environment, errors, hookspecs, ops, plugins, builtin_plugins, scenario,
#: units; docs/architecture.md draws this)
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


def _imports(path: Path, known: set[str], inside_functions: bool = True, module: str | None = None) -> set[str]:
    """Modules of the package that `path` (the module `module`, by default its name in the tree) imports: at
    module level, and (`inside_functions`) in any function or class body too, where a deferred import still
    closes a cycle when it runs; relative imports resolved against `module`; never those under
    `if TYPE_CHECKING:`, which only the type checker reads. A load by name (`by_name`) is not counted here."""
    tree = ast.parse(path.read_text())
    typing_only = _typing_only(tree)
    nodes = ast.walk(tree) if inside_functions else iter(tree.body)
    out: set[str] = set()
    for node in nodes:
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                base = _relative(node, module or _module_name(path), path.name == "__init__.py")
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known}


def _typing_only(tree: ast.Module) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`."""
    return {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }


def _relative(node: ast.ImportFrom, module: str, package: bool) -> str:
    """The module a relative `from .x import ...` (`from .. import`) names, resolved from `module` (a package's
    `__init__` when `package`) as Python resolves it."""
    parts = module.split(".") if package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


#: the calls that load a module by its name
_LOADERS = ("importlib.import_module", "import_module", "__import__")


def by_name(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `path` loads by name: `importlib.import_module` or `__import__` of a
    string literal, or of a module-level name bound to one (`EXPORTERS = "layerbench.report.exporters"`)."""
    tree = ast.parse(path.read_text())
    typing_only = _typing_only(tree)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.Call) or not node.args:
            continue
        if ast.unparse(node.func) not in _LOADERS:
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            out.add(arg.value)
        elif isinstance(arg, ast.Name) and arg.id in constants:
            out.add(constants[arg.id])
    return out & known


def _graph(inside_functions: bool = True) -> dict[str, set[str]]:
    """Who imports whom: every import (`_imports`) and every load by name (`by_name`)."""
    mods = _modules()
    known = set(mods)
    return {
        name: (_imports(path, known, inside_functions) | by_name(path, known)) - {name} for name, path in mods.items()
    }


#: The one run-time cycle, known here by name: a load by name that closes a cycle, and the cycle it closes.
#: Report renders through the plugin door (`report.render` -> `plugins`), and the door registers the built-in
#: exporters, which are report's (`builtin_plugins` loads `report.exporters` by name when the hook is called,
#: as a third-party plugin's entry point is loaded). No import meets a half-made module: that load and report's
#: import of plugins are both made inside a function (the hook, `render`), at run time. docs/architecture.md
#: says the same. Any other cycle fails.
ALLOWED_CYCLE_LOADS: dict[tuple[str, str], str] = {
    ("layerbench.builtin_plugins", "layerbench.report.exporters"): (
        "plugins -> builtin_plugins -> report.exporters -> report -> plugins"
    ),
}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import cycle of `graph`, as the modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import layerbench.b\n")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import layerbench.a\n")
    known = {"layerbench.a", "layerbench.b"}
    graph = {"layerbench.a": _imports(a, known), "layerbench.b": _imports(b, known)}
    assert _cycle(graph) is None  # a TYPE_CHECKING import closes no cycle
    b.write_text("def f() -> None:\n    from layerbench import a\n    import layerbench.a\n")
    graph["layerbench.b"] = _imports(b, known)
    assert _cycle(graph) == ["layerbench.a", "layerbench.b", "layerbench.a"]
    assert _imports(b, known, inside_functions=False) == set()  # what the old check saw


def test_the_cycle_finder_resolves_relative_imports_and_sees_loads_by_name(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .b import thing\nfrom .. import top\n")
    (pkg / "b.py").write_text(
        "import importlib\nNAME = 'layerbench.pkg.a'\n"
        "def f():\n    importlib.import_module(NAME)\n    __import__('layerbench.top')\n"
        "    importlib.import_module(f'layerbench.{NAME}')  # not a literal: not seen\n"
    )
    known = {"layerbench.top", "layerbench.pkg", "layerbench.pkg.a", "layerbench.pkg.b"}
    assert _imports(pkg / "__init__.py", known, module="layerbench.pkg") == {"layerbench.pkg.a"}
    assert _imports(pkg / "a.py", known, module="layerbench.pkg.a") == {"layerbench.pkg.b", "layerbench.top"}
    assert _imports(pkg / "b.py", known, module="layerbench.pkg.b") == set()
    assert by_name(pkg / "b.py", known) == {"layerbench.pkg.a", "layerbench.top"}
    graph = {
        "layerbench.pkg.a": {"layerbench.pkg.b"},
        "layerbench.pkg.b": by_name(pkg / "b.py", known) - {"layerbench.top"},
    }
    assert _cycle(graph) == ["layerbench.pkg.a", "layerbench.pkg.b", "layerbench.pkg.a"]


def test_no_import_cycles() -> None:
    """No cycle, counting imports inside functions, relative ones and loads by name (docs/architecture.md's
    layering holds at run time too), but the one allowed by name (ALLOWED_CYCLE_LOADS)."""
    graph = _graph()
    for importer, loaded in ALLOWED_CYCLE_LOADS:
        graph[importer].discard(loaded)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_each_allowed_cycle_is_still_there() -> None:
    """An allowed load by name is still made and closes the one cycle it is allowed for; else its exception
    goes (here and in docs/architecture.md)."""
    graph = _graph()
    for (importer, loaded), known in ALLOWED_CYCLE_LOADS.items():
        assert loaded in graph[importer], f"{importer} no longer loads {loaded}: drop it from ALLOWED_CYCLE_LOADS"
        assert _cycle({**graph, importer: graph[importer] - {loaded}}) is None
        cycle = _cycle(graph)
        assert cycle is not None
        expected = [f"layerbench.{m}" for m in known.split(" -> ")]
        assert set(itertools.pairwise(cycle)) == set(itertools.pairwise(expected)), " -> ".join(cycle)


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


def test_a_cells_process_imports_neither_pandas_nor_jsonschema() -> None:
    """A fleet cell's process (and a local cell) starts without the analysis stack: 0.7 s of each cell."""
    code = (
        "import sys; from layerbench.run.fleet import _cell_main; from layerbench.run.cell import run_cell; "
        "print(sorted(m for m in ('pandas', 'jsonschema', 'plotly', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


#: the most lines a function of these packages has, unless it is one concern and says so: a comment
#: `# one concern: WHY` among its lines
MAX_FUNCTION_LINES = 60
SHORT_FUNCTIONS = ("run", "analysis", "report")


def test_functions_of_run_analysis_and_report_are_short() -> None:
    long = []
    for group in SHORT_FUNCTIONS:
        for path in sorted((HARNESS / group).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    body = lines[node.lineno - 1 : node.end_lineno]
                    if len(body) > MAX_FUNCTION_LINES and not any("# one concern:" in line for line in body):
                        long.append(f"{path.relative_to(HARNESS)}:{node.lineno} {node.name}: {len(body)} lines")
    assert not long, "functions over 60 lines (split them, or say `# one concern: why`):\n" + "\n".join(long)


TESTS = Path(__file__).parent


def test_no_test_module_imports_another() -> None:
    """Test modules share code through conftest's fixtures and plain helper modules (tests/image_files.py,
    tests/checks.py, integration/fleet_procs.py), never by importing another test module."""
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names if not node.module)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            last = [n.rsplit(".", 1)[-1] for n in names]
            if any(n.startswith("test_") for n in last):
                wrong.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert not wrong, "test modules importing test modules: " + ", ".join(wrong)
