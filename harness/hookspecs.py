"""The hooks a layerbench plugin can implement.

A plugin is a module (or object) with functions marked ``@hookimpl``, found through
the ``layerbench.drivers`` or ``layerbench.plugins`` entry-point groups. Every hook
is a registration hook: it receives a registry and calls ``registry.add(...)``.
layerbench's own exporters and image sources come in through the same hooks
(harness/builtin_plugins.py, registered first: a plugin cannot take their names).
What a registry refuses (a duplicate name, a missing method, a wrong type) raises
a ``PluginError`` naming the plugin; that plugin is recorded as broken and the
others still load. ``layerbench plugins`` prints what was loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from layerbench.plugins import DriverRegistry, ExporterRegistry, ImageSourceRegistry

__all__ = [
    "hookspec",
    "hookimpl",
    "PROJECT",
    "layerbench_register_drivers",
    "layerbench_register_exporters",
    "layerbench_register_image_sources",
]

PROJECT = "layerbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def layerbench_register_drivers(registry: DriverRegistry) -> None:
    """Add driver classes with ``registry.add(MyDriver)``.

    :param registry: the registry; a duplicate name or a class missing a method of
        :class:`layerbench.driver.Driver` is refused, naming the plugin.
    """


@hookspec
def layerbench_register_exporters(registry: ExporterRegistry) -> None:
    """Add report formats with ``registry.add(name, exporter, suffix=..., description=...)``.

    :param registry: the registry. ``exporter`` is a callable
        ``exporter(report: layerbench.report.Report, out: typing.TextIO) -> None``
        that writes a report to ``out``: ``report.doc`` is the merged results document
        (the JSON the runner saves, see docs/results.md), ``report.rows`` one summary
        row per cell and metric (a ``layerbench.report.MetricRow``) with its ``ratio``
        to ``report.baseline``, ``report.runs`` one ``layerbench.report.RunRecord`` per run
        (label, times, status, machine, tool, helpers; read by key too). ``name`` is then a
        choice of ``layerbench report -f``;
        ``suffix`` is the file name ending it writes (".csv"), by which ``-o FILE`` picks it. A duplicate name or an
        exporter that is not callable is refused, naming the plugin.
    """


@hookspec
def layerbench_register_image_sources(registry: ImageSourceRegistry) -> None:
    """Add image sources (where a scenario's image comes from) with ``registry.add(name, source, ...)``.

    :param registry: the registry. ``source`` is a callable
        ``source(table: Mapping[str, Any], base_dir: pathlib.Path) -> Image``: it gets
        a scenario's ``[image]`` table (whose ``source`` key is ``name``; parameters
        substituted; its other keys are the source's to check, raising ``UserError``)
        and the directory of the scenario file, and returns an object with the
        :class:`layerbench.images.image.Image` protocol (layer_count, total_bytes,
        total_files, file_paths(), apply(index, root, layer_format, *, opaque_xattr)).
        ``source = "<name>"`` is then valid in a scenario and the runner opens the
        image through it. A duplicate name or a source that is not callable is
        refused, naming the plugin.
    """
