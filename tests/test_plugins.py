from __future__ import annotations

from pathlib import Path

import pytest

from layerbench import Driver, LayerFormat, Style, hookimpl
from layerbench.drivers import NullDriver
from layerbench.plugins import load_plugins


class _Incomplete(Driver):
    name = "incomplete"
    style = Style.UNION
    layer_format = LayerFormat.DIFF

    def create_layer(self, layer_id: str, parent: str | None) -> Path:
        return self.home


class _MissingMethodPlugin:
    __name__ = "missing-method-plugin"

    @hookimpl
    def layerbench_register_drivers(self, registry):
        registry.add(_Incomplete)


class _DuplicatePlugin:
    __name__ = "duplicate-plugin"

    @hookimpl
    def layerbench_register_drivers(self, registry):
        class Again(NullDriver):
            pass

        registry.add(Again)


def test_builtins_come_through_the_entry_point() -> None:
    plugins = load_plugins()
    assert {"null", "vfs", "overlay2", "btrfs"} <= set(plugins.registry.drivers)
    assert plugins.registry.origin["overlay2"].startswith("builtin")
    assert plugins.broken == {}


def test_missing_method_is_refused_naming_plugin_and_methods() -> None:
    plugins = load_plugins(extra=(_MissingMethodPlugin(),))
    assert "incomplete" not in plugins.registry.drivers
    message = plugins.broken["missing-method-plugin"]
    assert "missing-method-plugin" in message
    assert "commit" in message and "mount" in message
    assert "overlay2" in plugins.registry.drivers  # the others still load


def test_duplicate_name_is_refused() -> None:
    plugins = load_plugins(extra=(_DuplicatePlugin(),))
    assert "already registered by plugin builtin" in plugins.broken["duplicate-plugin"]
    assert plugins.registry.drivers["null"] is NullDriver


@pytest.mark.mounts
def test_every_driver_probes_to_none_or_one_sentence() -> None:
    for cls in load_plugins().registry.drivers.values():
        reason = cls.probe()
        assert reason is None or (isinstance(reason, str) and "\n" not in reason and reason)
