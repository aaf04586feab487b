"""`layerbench plugins`: what is loaded — each plugin's name, version, module, hooks and what it added — as JSON."""

from __future__ import annotations

import json
from typing import Any

import click

from layerbench.plugins import Plugins, default_plugins

__all__ = ["plugins_cmd", "plugin_rows"]


def plugin_rows(plugins: Plugins | None = None) -> list[dict[str, Any]]:
    """One dict per plugin: loaded ones first, then broken ones with the reason."""
    plugins = plugins or default_plugins()
    rows = [info.as_dict() for info in plugins.info.values()]
    for label, why in plugins.broken.items():
        rows.append(
            {
                "name": label,
                "version": None,
                "module": None,
                "hooks": [],
                "drivers": [],
                "exporters": [],
                "image_sources": [],
                "broken": why,
            }
        )
    return rows


@click.command("plugins")
def plugins_cmd() -> None:
    """Print the loaded plugins as JSON: name, version, module, hooks, the drivers, exporters (report formats)
    and image sources each added (and why a plugin broke)."""
    click.echo(json.dumps(plugin_rows(), indent=2))
