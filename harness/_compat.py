"""The old module names under `layerbench.harness`, kept for one release with a warning.

Until 0.2 the code lived under `layerbench.harness.*`; it is now `layerbench.*`, grouped
by concern. An import of an old name gets the new module (the same object, so a class
has one identity) and a DeprecationWarning naming the new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence

__all__ = ["MOVED", "new_name", "install"]

OLD = "layerbench.harness"

#: old module (under layerbench.harness) -> new module (under layerbench)
MOVED: dict[str, str] = {
    **{m: f"run.{m}" for m in ("runner", "steps", "backing", "ledger", "userns", "overhead", "machine")},
    **{m: f"images.{m}" for m in ("image", "image_sources", "oci", "layer_tar")},
    **{m: f"kernel.{m}" for m in ("syscalls", "treecopy", "safety")},
    **{m: f"analysis.{m}" for m in ("results", "stats", "claims", "compare")},
    **{m: f"report.{m}" for m in ("report_md", "report_html", "plots", "table")},
    "conformance": "testing.conformance",
}


def new_name(old: str) -> str:
    """`layerbench.harness.runner` -> `layerbench.run.runner`; unmoved names keep their tail."""
    if old == OLD:
        return "layerbench"
    head, _, tail = old[len(OLD) + 1 :].partition(".")
    moved = MOVED.get(head, head)
    return f"layerbench.{moved}" + (f".{tail}" if tail else "")


def _old_package(package: types.ModuleType) -> types.ModuleType:
    """`layerbench.harness` itself: its submodules by their old names, its names from `package` (`layerbench`,
    handed over by `install`: this module, which the package imports, does not import it back)."""
    shim = types.ModuleType(OLD, "Deprecated: use `layerbench`.")
    shim.__path__ = []

    def __getattr__(name: str) -> object:
        try:
            return importlib.import_module(new_name(f"{OLD}.{name}"))
        except ModuleNotFoundError:
            return getattr(package, name)

    shim.__getattr__ = __getattr__  # type: ignore[method-assign]
    return shim


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, package: types.ModuleType) -> None:
        self.package = package
        self.real_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != OLD and not fullname.startswith(OLD + "."):
            return None
        if fullname == OLD:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        found = importlib.util.find_spec(new_name(fullname))
        if found is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=found.submodule_search_locations is not None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = new_name(spec.name)
        warnings.warn(f"{spec.name} is deprecated; import {new} instead", DeprecationWarning, stacklevel=2)
        if spec.name == OLD:
            return _old_package(self.package)
        module = importlib.import_module(new)
        self.real_specs[new] = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """The import system has just set `__spec__` to the old name's: give the module its own back."""
        if module.__name__ in self.real_specs:
            module.__spec__ = self.real_specs[module.__name__]


def install(package: types.ModuleType) -> None:
    """Serve the old names (once per process); `layerbench.harness`'s own names are `package`'s."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(package))  # before the path finder, which would load a second copy
