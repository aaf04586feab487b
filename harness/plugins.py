"""Plugin loading: every driver, built-in or not, comes in through entry points."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from . import hookspecs
from .driver import Driver, LayerFormat, Style
from .errors import UserError

__all__ = ["DriverRegistry", "PluginError", "Plugins", "load_plugins", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "layerbench.drivers"


class PluginError(Exception):
    """A plugin broke a rule of the interface; the message names the plugin."""


@dataclass
class DriverRegistry:
    """Driver classes by name, filled through the `layerbench_register_drivers` hook."""

    drivers: dict[str, type[Driver]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    current_plugin: str = "?"

    def add(self, cls: type[Driver]) -> None:
        plugin = self.current_plugin
        if not (inspect.isclass(cls) and issubclass(cls, Driver)):
            raise PluginError(f"plugin {plugin}: {cls!r} is not a subclass of layerbench Driver")
        for attr, kind in (("name", str), ("style", Style), ("layer_format", LayerFormat)):
            if not isinstance(getattr(cls, attr, None), kind):
                raise PluginError(f"plugin {plugin}: driver {cls.__name__} has no valid `{attr}`")
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            raise PluginError(
                f"plugin {plugin}: driver {cls.name!r} does not implement {', '.join(missing)}"
            )
        if cls.name in self.drivers:
            raise PluginError(
                f"plugin {plugin}: driver name {cls.name!r} is already registered "
                f"by plugin {self.origin[cls.name]}"
            )
        self.drivers[cls.name] = cls
        self.origin[cls.name] = plugin


@dataclass
class Plugins:
    """What was loaded: the plugin manager, the driver registry and the plugins that broke."""

    manager: pluggy.PluginManager
    registry: DriverRegistry
    broken: dict[str, str]

    def driver(self, name: str) -> type[Driver]:
        try:
            return self.registry.drivers[name]
        except KeyError:
            known = ", ".join(sorted(self.registry.drivers)) or "none"
            raise UserError(f"unknown driver {name!r}; known drivers: {known}") from None


def _plugin_version(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else "?"


def load_plugins(extra: tuple[object, ...] = ()) -> Plugins:
    """Load every `layerbench.drivers` entry point (plus `extra` plugin objects).

    A plugin that fails to import or to register is recorded in `broken` and the
    others still load.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    broken: dict[str, str] = {}
    candidates: list[tuple[str, object]] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        label = f"{ep.name} ({ep.value})"
        try:
            candidates.append((label, ep.load()))
        except Exception as exc:  # a broken plugin must not take the others down
            broken[label] = f"import failed: {exc}"
    candidates.extend((getattr(p, "__name__", repr(p)), p) for p in extra)

    registry = DriverRegistry()
    for label, plugin in candidates:
        try:
            pm.register(plugin, name=label)
        except Exception as exc:
            broken[label] = f"registration failed: {exc}"
            continue
        impls = [i for i in pm.hook.layerbench_register_drivers.get_hookimpls() if i.plugin is plugin]
        for impl in impls:
            registry.current_plugin = label
            before = dict(registry.drivers)
            try:
                impl.function(registry=registry)
            except Exception as exc:
                registry.drivers = before
                registry.origin = {k: v for k, v in registry.origin.items() if k in before}
                broken[label] = str(exc)
    pm.check_pending()
    return Plugins(manager=pm, registry=registry, broken=broken)


@functools.cache
def default_plugins() -> Plugins:
    """The plugins installed in this environment, loaded once per process."""
    return load_plugins()
