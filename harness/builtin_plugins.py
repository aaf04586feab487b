"""layerbench's own exporters and image sources, registered through the hooks a third-party plugin implements.

`load_plugins` registers this module first, so `report -f`, `layerbench plugins`,
the scenario validator and the runner see the built-ins and a plugin's additions
the same way, and a plugin cannot take a built-in name. The readers and writers
themselves live in their own modules and are imported when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbench.hookspecs import hookimpl

if TYPE_CHECKING:
    from layerbench.images.image import Image
    from layerbench.plugins import ExporterRegistry, ImageSourceRegistry

__all__ = ["layerbench_register_exporters", "layerbench_register_image_sources"]


#: the built-in exporters live in the report layer and are loaded by name when the hook is called, as an entry
#: point is: report renders through this plugin door, so the door does not import report. The load still closes
#: a cycle at run time, the one tests/test_layout.py allows by name (ALLOWED_CYCLE_LOADS; docs/architecture.md)
EXPORTERS = "layerbench.report.exporters"


@hookimpl
def layerbench_register_exporters(registry: ExporterRegistry) -> None:
    """The report formats: Markdown (short and long), HTML, the tidy CSV, JSON and the console table."""
    importlib.import_module(EXPORTERS).register_exporters(registry)


def _synthetic(table: Mapping[str, Any], base_dir: Path) -> Image:
    from layerbench.images.image import synthetic_from_table

    return synthetic_from_table(dict(table))


def _synthetic_oci(table: Mapping[str, Any], base_dir: Path) -> Image:
    from layerbench.images.caches import synthetic_layout
    from layerbench.images.image import synthetic_from_table
    from layerbench.images.image_sources import open_image

    return open_image("oci", synthetic_layout(synthetic_from_table(dict(table)), table.get("compression", "gzip")))


def _from_path(source: str) -> Callable[[Mapping[str, Any], Path], Image]:
    """The image source reading `path` (relative to the scenario file) as a `source` image."""

    def open_path(table: Mapping[str, Any], base_dir: Path) -> Image:
        from layerbench.images.image_sources import open_image

        return open_image(source, base_dir / table["path"])

    open_path.__name__ = open_path.__qualname__ = f"open_{source.replace('-', '_')}"
    return open_path


def _debian(table: Mapping[str, Any], base_dir: Path) -> Image:
    from layerbench.images.debian import open_debian

    return open_debian(table["recipe"], table.get("compression", "gzip"))


def _registry(table: Mapping[str, Any], base_dir: Path) -> Image:
    from layerbench.images.registry_client import open_reference

    return open_reference(table["reference"], token=table.get("token"), insecure=bool(table.get("insecure", False)))


@hookimpl
def layerbench_register_image_sources(registry: ImageSourceRegistry) -> None:
    """Generated images, an OCI image layout, a `docker save` archive, a host directory, a Debian-built
    image and a registry's image."""
    registry.add("synthetic", _synthetic, description="generated layers of files ([image] layers, files, bytes...)")
    registry.add(
        "synthetic-oci",
        _synthetic_oci,
        description="a synthetic image packed as an OCI layout with compressed layers, then imported",
    )
    registry.add("oci", _from_path("oci"), description="an OCI image layout directory or tar (path)")
    registry.add("docker-archive", _from_path("docker-archive"), description="a `docker save` archive (path)")
    registry.add("dir", _from_path("dir"), description="a host directory as a one-layer image (path)")
    registry.add(
        "debian",
        _debian,
        description="a real image built from Debian packages, cached per machine (recipe: busybox, busybox-httpd, "
        "python, nginx; compression)",
    )
    registry.add(
        "registry",
        _registry,
        description="your own image from a registry (reference host:port/name:tag; token, insecure for HTTP)",
    )
