"""The plugin API beyond drivers: exporters and image sources, the `plugins` verb, documented hooks."""

from __future__ import annotations

import inspect
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from click.testing import CliRunner

from layerbench import hookimpl, hookspecs
from layerbench.cli import main
from layerbench.cli.plugins import plugin_rows
from layerbench.images.image import FileSpec, Image, LayerSpec, SyntheticImage
from layerbench.plugins import load_plugins
from layerbench.report import Report, build, read_all


def _tsv(report: Report, out: TextIO) -> None:
    for cell in report.doc["cells"]:
        out.write(f"{cell['scenario']}\t{cell['driver']}\t{cell['status']}\n")


def _one_file(table: Mapping[str, Any], base_dir: Path) -> Image:
    return SyntheticImage(layers=(LayerSpec(files=(FileSpec(str(table["path"]), int(table["size"]), 7),)),))


class _ExportsAndSources:
    __name__ = "tsv-and-one-file"

    @hookimpl
    def layerbench_register_exporters(self, registry):
        registry.add("tsv", _tsv, suffix=".tsv", description="scenario, driver, status per cell")

    @hookimpl
    def layerbench_register_image_sources(self, registry):
        registry.add("one-file", _one_file, description="an image of one file")


class _BrokenExporter:
    __name__ = "broken-exporter"

    @hookimpl
    def layerbench_register_exporters(self, registry):
        registry.add("fine", _tsv)
        registry.add("not-callable", 42)


def test_a_plugin_adds_an_exporter_and_an_image_source() -> None:
    plugins = load_plugins(extra=(_ExportsAndSources(),))
    assert plugins.broken == {}
    out = io.StringIO()
    plugins.exporter("tsv")(build(read_all([Path(__file__).parent / "data" / "null.json"])), out)
    assert out.getvalue() == "copy-up\tnull\tok\n" * 2 and plugins.exporters.suffix["tsv"] == ".tsv"
    image = plugins.image_sources.items["one-file"]({"source": "one-file", "path": "a/b", "size": 3}, Path("."))
    assert image.total_files == 1 and image.total_bytes == 3 and image.file_paths() == ["a/b"]
    info = plugins.info["tsv-and-one-file"]
    assert info.exporters == ["tsv"] and info.image_sources == ["one-file"]
    assert info.hooks == ["layerbench_register_exporters", "layerbench_register_image_sources"]


def test_a_broken_exporter_plugin_is_refused_whole_and_the_others_load() -> None:
    plugins = load_plugins(extra=(_BrokenExporter(), _ExportsAndSources()))
    message = plugins.broken["broken-exporter"]
    assert "broken-exporter" in message and "not-callable" in message and "not callable" in message
    assert "fine" not in plugins.exporters.items  # what it did register is taken back
    assert "tsv" in plugins.exporters.items and "overlay2" in plugins.registry.drivers


def test_duplicate_exporter_names_the_first_plugin() -> None:
    class Again(_ExportsAndSources):
        __name__ = "again"

    plugins = load_plugins(extra=(_ExportsAndSources(), Again()))
    assert "already registered by plugin tsv-and-one-file" in plugins.broken["again"]


def test_every_hook_is_typed_and_documented_with_its_parameters() -> None:
    specs = [f for n, f in vars(hookspecs).items() if n.startswith("layerbench_") and callable(f)]
    assert {f.__name__ for f in specs} >= {
        "layerbench_register_drivers",
        "layerbench_register_exporters",
        "layerbench_register_image_sources",
    }
    for spec in specs:
        sig = inspect.signature(spec)
        assert sig.return_annotation in (None, "None"), spec.__name__
        for name, param in sig.parameters.items():
            assert param.annotation is not inspect.Parameter.empty, f"{spec.__name__}({name}) is untyped"
            assert f":param {name}:" in (spec.__doc__ or ""), f"{spec.__name__}: {name} is undocumented"


def test_plugins_verb_prints_json_with_the_builtin_drivers() -> None:
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    builtin = next(r for r in rows if r["module"] == "layerbench.drivers")
    assert {"overlay2", "vfs", "btrfs", "null", "reflink", "zfs", "fuse-overlayfs"} <= set(builtin["drivers"])
    assert builtin["hooks"] == ["layerbench_register_drivers"] and builtin["version"]
    assert {"name", "version", "module", "hooks", "drivers"} <= set(builtin)
    assert rows == plugin_rows()
