"""The hooks a layerbench plugin can implement.

A plugin is a module (or object) with functions marked ``@hookimpl``, found through
the ``layerbench.drivers`` or ``layerbench.plugins`` entry-point groups. Every hook
is a registration hook: it receives a registry and calls ``registry.add(...)``.
What a registry refuses (a duplicate name, a missing method, a wrong type) raises
a ``PluginError`` naming the plugin; that plugin is recorded as broken and the
others still load. ``layerbench plugins`` prints what was loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .plugins import DriverRegistry, ExporterRegistry, ImageSourceRegistry

__all__ = [
    "hookspec", "hookimpl", "PROJECT",
    "layerbench_register_drivers", "layerbench_register_exporters", "layerbench_register_image_sources",
]

PROJECT = "layerbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def layerbench_register_drivers(registry: DriverRegistry) -> None:
    """Add driver classes with ``registry.add(MyDriver)``.

    :param registry: the registry; a duplicate name or a class missing a method of
        :class:`layerbench.harness.driver.Driver` is refused, naming the plugin.
    """


@hookspec
def layerbench_register_exporters(registry: ExporterRegistry) -> None:
    """Add output formats for results with ``registry.add(name, exporter, suffix=..., description=...)``.

    :param registry: the registry. ``exporter`` is a callable
        ``exporter(document: dict[str, Any], out: typing.TextIO) -> None`` that writes
        one results document (the JSON the runner saves, see docs/results.md) to
        ``out``; ``suffix`` is the file name ending it writes (".csv"). A duplicate
        name or an exporter that is not callable is refused, naming the plugin.
    """


@hookspec
def layerbench_register_image_sources(registry: ImageSourceRegistry) -> None:
    """Add image sources (where a scenario's image comes from) with ``registry.add(name, source, ...)``.

    :param registry: the registry. ``source`` is a callable
        ``source(table: Mapping[str, Any], base_dir: pathlib.Path) -> Image``: it gets
        a scenario's ``[image]`` table (whose ``source`` key is ``name``) and the
        directory of the scenario file, and returns an object with the
        :class:`layerbench.harness.image.Image` protocol (layer_count, total_bytes,
        total_files, file_paths(), apply(index, root, layer_format)). A duplicate name or a source
        that is not callable is refused, naming the plugin.
    """
