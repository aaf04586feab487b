"""Plugin loading: every driver, exporter and image source, built-in or not, comes in through the same hooks.

The built-in drivers are the `layerbench.drivers` entry point of layerbench itself;
the built-in exporters and image sources are harness/builtin_plugins.py, registered
first (as pluggy and tox load their own built-ins), so a third party's name can never
shadow one of them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar

import pluggy

from layerbench import builtin_plugins, hookspecs
from layerbench.driver import Driver, LayerFormat, Style
from layerbench.errors import UserError

if TYPE_CHECKING:
    from layerbench.images.image import Image
    from layerbench.report import Report

__all__ = [
    "DriverRegistry",
    "ExporterRegistry",
    "ImageSourceRegistry",
    "Exporter",
    "ImageSource",
    "PluginError",
    "PluginInfo",
    "Plugins",
    "load_plugins",
    "ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUPS",
]

ENTRY_POINT_GROUP = "layerbench.drivers"
#: Plugins are found in both groups: drivers, and plugins that add anything else.
ENTRY_POINT_GROUPS = (ENTRY_POINT_GROUP, "layerbench.plugins")

#: Writes a report (harness/report/__init__.py `Report`: the merged results document and its summary) to a text stream.
Exporter = Callable[["Report", TextIO], None]
#: Turns a scenario's [image] table (and the scenario file's directory) into layers.
ImageSource = Callable[[Mapping[str, Any], Path], "Image"]


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
            raise PluginError(f"plugin {plugin}: driver {cls.name!r} does not implement {', '.join(missing)}")
        if cls.name in self.drivers:
            raise PluginError(
                f"plugin {plugin}: driver name {cls.name!r} is already registered by plugin {self.origin[cls.name]}"
            )
        self.drivers[cls.name] = cls
        self.origin[cls.name] = plugin


T = TypeVar("T")


@dataclass
class _NamedRegistry(Generic[T]):
    """Callables by name, with the plugin that added each; refuses duplicates and non-callables."""

    kind: str = "item"
    items: dict[str, T] = field(default_factory=dict)
    suffix: dict[str, str] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    current_plugin: str = "?"

    def add(self, name: str, obj: T, suffix: str = "", description: str = "") -> None:
        plugin = self.current_plugin
        if not (isinstance(name, str) and name):
            raise PluginError(f"plugin {plugin}: a {self.kind} needs a non-empty string name, not {name!r}")
        if not callable(obj):
            raise PluginError(f"plugin {plugin}: {self.kind} {name!r} is not callable ({obj!r})")
        if name in self.items:
            raise PluginError(
                f"plugin {plugin}: {self.kind} name {name!r} is already registered by plugin {self.origin[name]}"
            )
        self.items[name] = obj
        self.suffix[name] = suffix
        self.description[name] = description
        self.origin[name] = plugin

    def _snapshot(self) -> tuple[dict[str, T], dict[str, str], dict[str, str], dict[str, str]]:
        return dict(self.items), dict(self.suffix), dict(self.description), dict(self.origin)

    def _restore(self, saved: tuple[dict[str, T], dict[str, str], dict[str, str], dict[str, str]]) -> None:
        self.items, self.suffix, self.description, self.origin = (dict(x) for x in saved)  # type: ignore[assignment]


class ExporterRegistry(_NamedRegistry[Exporter]):
    """Result exporters by name, filled through `layerbench_register_exporters`."""

    def __init__(self) -> None:
        super().__init__(kind="exporter")


class ImageSourceRegistry(_NamedRegistry[ImageSource]):
    """Image sources by name, filled through `layerbench_register_image_sources`."""

    def __init__(self) -> None:
        super().__init__(kind="image source")


@dataclass
class PluginInfo:
    """One loaded plugin, as `layerbench plugins` shows it."""

    name: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    drivers: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)
    image_sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "drivers": self.drivers,
            "exporters": self.exporters,
            "image_sources": self.image_sources,
        }


@dataclass
class Plugins:
    """What was loaded: the plugin manager, the registries and the plugins that broke."""

    manager: pluggy.PluginManager
    registry: DriverRegistry
    broken: dict[str, str]
    exporters: ExporterRegistry = field(default_factory=ExporterRegistry)
    image_sources: ImageSourceRegistry = field(default_factory=ImageSourceRegistry)
    info: dict[str, PluginInfo] = field(default_factory=dict)

    def driver(self, name: str) -> type[Driver]:
        try:
            return self.registry.drivers[name]
        except KeyError:
            known = ", ".join(sorted(self.registry.drivers)) or "none"
            raise UserError(f"unknown driver {name!r}; known drivers: {known}") from None

    def exporter(self, name: str) -> Exporter:
        """The registered exporter `name` (a report format), or one line naming the known ones."""
        if name not in self.exporters.items:
            raise UserError(f"unknown report format {name!r}; known formats: {', '.join(self.exporters.items)}")
        return self.exporters.items[name]

    def image_source(self, name: str) -> ImageSource:
        """The registered image source `name`, or one line naming the known ones."""
        if name not in self.image_sources.items:
            known = ", ".join(self.image_sources.items)
            raise UserError(f"unknown image source {name!r}; known sources: {known}")
        return self.image_sources.items[name]


def _plugin_version(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else "?"


def _own_version() -> str:
    try:
        return metadata.version("layerbench")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "?"


def _module_of(plugin: object) -> str:
    if inspect.ismodule(plugin):
        return plugin.__name__
    return getattr(type(plugin), "__module__", "?") + "." + type(plugin).__qualname__


def _reason(label: str, why: str) -> str:
    """Why a plugin broke, naming it once: PluginError messages already start with `plugin LABEL: `."""
    prefix = f"plugin {label}: "
    return why if why.startswith(prefix) else prefix + why


#: registered before the entry points, as layerbench's own plugin
BUILTIN = (f"builtin ({builtin_plugins.__name__})", builtin_plugins)
_HOOKS = ("layerbench_register_drivers", "layerbench_register_exporters", "layerbench_register_image_sources")


def load_plugins(extra: tuple[object, ...] = ()) -> Plugins:
    """Load the built-in plugin, then every `layerbench.drivers` and `layerbench.plugins` entry point
    (plus `extra` objects).

    A plugin that fails to import or to register anything is recorded in `broken`
    (label -> one line starting `plugin LABEL: `), what it registered is taken back,
    and the others still load.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    broken: dict[str, str] = {}
    candidates: list[tuple[str, object, str]] = [(*BUILTIN, _own_version())]
    seen: set[tuple[str, str]] = set()
    for group in ENTRY_POINT_GROUPS:
        for ep in metadata.entry_points(group=group):
            if (ep.name, ep.value) in seen:
                continue
            seen.add((ep.name, ep.value))
            label = f"{ep.name} ({ep.value})"
            try:
                candidates.append((label, ep.load(), _plugin_version(ep)))
            except Exception as exc:  # noqa: BLE001  a broken plugin must not take the others down
                broken[label] = _reason(label, f"import failed: {exc}")
    candidates.extend((getattr(p, "__name__", repr(p)), p, "?") for p in extra)

    registry = DriverRegistry()
    exporters, sources = ExporterRegistry(), ImageSourceRegistry()
    info: dict[str, PluginInfo] = {}
    for label, plugin, version in candidates:
        try:
            pm.register(plugin, name=label)
        except Exception as exc:  # noqa: BLE001  (as above)
            broken[label] = _reason(label, f"registration failed: {exc}")
            continue
        saved = (dict(registry.drivers), dict(registry.origin), exporters._snapshot(), sources._snapshot())
        hooks: list[str] = []
        try:
            for hook in _HOOKS:
                impls = [i for i in getattr(pm.hook, hook).get_hookimpls() if i.plugin is plugin]
                for impl in impls:
                    hooks.append(hook)
                    registry.current_plugin = exporters.current_plugin = sources.current_plugin = label
                    target = {
                        "layerbench_register_drivers": registry,
                        "layerbench_register_exporters": exporters,
                        "layerbench_register_image_sources": sources,
                    }[hook]
                    impl.function(registry=target)
        except Exception as exc:  # noqa: BLE001  (as above)
            registry.drivers, registry.origin = saved[0], saved[1]
            exporters._restore(saved[2])
            sources._restore(saved[3])
            broken[label] = _reason(label, str(exc))
            pm.unregister(plugin)
            continue
        info[label] = PluginInfo(
            name=label,
            version=version,
            module=_module_of(plugin),
            hooks=sorted(set(hooks)),
            drivers=sorted(n for n, o in registry.origin.items() if o == label),
            exporters=sorted(n for n, o in exporters.origin.items() if o == label),
            image_sources=sorted(n for n, o in sources.origin.items() if o == label),
        )
    pm.check_pending()
    return Plugins(manager=pm, registry=registry, broken=broken, exporters=exporters, image_sources=sources, info=info)


@functools.cache
def default_plugins() -> Plugins:
    """The plugins installed in this environment, loaded once per process."""
    return load_plugins()
