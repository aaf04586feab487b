"""Exporters and image sources from outside the repository, end to end: the example plugins in docs/examples
(installed by .ci/setup) add the report format `junit` and the image source `layer-dirs`, which `layerbench
report -f` and a scenario's `[image] source` reach through the same registries as the built-ins."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from layerbench import hookimpl
from layerbench.cli import main
from layerbench.plugins import BUILTIN, ExporterRegistry, default_plugins, load_plugins

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def _installed(dist: str) -> None:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed: pip install ./docs/examples/{dist} (.ci/setup does)")


def _invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_the_builtin_formats_and_sources_come_through_the_plugin_door() -> None:
    plugins = load_plugins()
    assert plugins.broken.get(BUILTIN[0]) is None
    assert set(plugins.exporters.items) >= {"md", "md-long", "html", "csv", "json", "table"}
    assert set(plugins.image_sources.items) >= {"synthetic", "dir", "oci", "docker-archive"}
    info = plugins.info[BUILTIN[0]]
    assert info.hooks == ["layerbench_register_exporters", "layerbench_register_image_sources"]
    assert "csv" in info.exporters and "oci" in info.image_sources


def test_a_plugin_cannot_take_a_builtin_name() -> None:
    class Shadow:
        __name__ = "shadow"

        @hookimpl
        def layerbench_register_exporters(self, registry: ExporterRegistry) -> None:
            registry.add("csv", lambda report, out: print("not the tidy CSV", file=out))

    plugins = load_plugins(extra=(Shadow(),))
    assert f"already registered by plugin {BUILTIN[0]}" in plugins.broken["shadow"]
    assert plugins.exporters.origin["csv"] == BUILTIN[0]


def test_an_unknown_format_and_source_are_one_line(tmp_path: Path) -> None:
    code, _, err = _invoke("report", str(DATA / "null.json"), "-f", "nope")
    assert code == 2 and "'nope' is not one of" in err and "'csv'" in err
    code, _, err = _invoke("report", str(DATA / "null.json"), "-o", str(tmp_path / "r.zzz"))
    assert code == 2 and err.startswith("layerbench: error: -o ") and "one of md" in err
    toml = tmp_path / "s.toml"
    toml.write_text('name = "s"\ndescription = "d"\n[image]\nsource = "my-registry"\n[[step]]\nop = "start"\n')
    code, _, err = _invoke(
        "run", str(toml), "-d", "null", "--work-root", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "unknown source 'my-registry'; allowed: synthetic" in err and "docker-archive" in err


def test_report_writes_a_third_party_format(tmp_path: Path) -> None:
    _installed("layerbench-example-exporter")
    code, out, err = _invoke("report", str(DATA / "copy-up.json"), str(DATA / "null.json"), "-f", "junit")
    assert code == 0, err
    suites = ElementTree.fromstring(out)
    cases = suites.findall("./testsuite/testcase")
    cells = (
        json.loads((DATA / "copy-up.json").read_text())["cells"] + json.loads((DATA / "null.json").read_text())["cells"]
    )
    assert len(cases) == len(cells) > 0
    assert {c.get("classname") for c in cases} == {f"{c['scenario']}.{c['driver']}" for c in cells}
    code, _, err = _invoke("report", str(DATA / "null.json"), "-o", str(tmp_path / "cells.xml"))  # by suffix
    assert code == 0, err
    assert ElementTree.parse(tmp_path / "cells.xml").getroot().tag == "testsuites"
    rows = json.loads(_invoke("plugins")[1])
    assert next(r for r in rows if r["module"] == "layerbench_example_exporter")["exporters"] == ["junit"]
    assert "junit" in CliRunner().invoke(main, ["report", "--help"]).stdout


def _layers(root: Path) -> dict[str, bytes]:
    """Two layer directories; the upper replaces etc/os-release. Returns the flattened image's files."""
    (root / "00-base" / "etc").mkdir(parents=True)
    (root / "00-base" / "etc" / "os-release").write_bytes(b"NAME=base\n")
    (root / "00-base" / "etc" / "hostname").write_bytes(b"example\n")
    (root / "01-app" / "etc").mkdir(parents=True)
    (root / "01-app" / "etc" / "os-release").write_bytes(b"NAME=app on base\n")
    (root / "01-app" / "app").mkdir()
    (root / "01-app" / "app" / "run.sh").write_bytes(b"#!/bin/sh\necho hello\n")
    return {
        "etc/os-release": b"NAME=app on base\n",
        "etc/hostname": b"example\n",
        "app/run.sh": b"#!/bin/sh\necho hello\n",
    }


def _scenario(path: Path, files: dict[str, bytes]) -> None:
    steps = "".join(
        f'[[step]]\nop = "expect"\npath = "{rel}"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n\n'
        for rel, data in files.items()
    )
    path.write_text(
        'name = "example-source"\ndescription = "an image from the layer-dirs plugin"\n\n'
        '[image]\nsource = "layer-dirs"\npath = "layers"\n\n'
        f'[[step]]\nop = "start"\nmeasure = "startup_ns"\n\n{steps}'
    )


@pytest.mark.mounts
def test_a_scenario_runs_on_a_third_party_image_source(tmp_path: Path) -> None:
    _installed("layerbench-example-source")
    files = _layers(tmp_path / "layers")
    image = default_plugins().image_source("layer-dirs")({"source": "layer-dirs", "path": "layers"}, tmp_path)
    assert image.layer_count == 2 and image.file_paths() == sorted(files)
    assert image.total_bytes == sum(map(len, files.values()))
    _scenario(tmp_path / "s.toml", files)
    code, out, err = _invoke(
        "run",
        str(tmp_path / "s.toml"),
        "-d",
        "vfs",
        "-d",
        "null",
        "--samples",
        "2",
        "--warmup",
        "0",
        "--work-root",
        str(tmp_path / "work"),
        "--results-dir",
        str(tmp_path / "results"),
        "--label",
        "doors",
        "--export-csv",
        str(tmp_path / "run.csv"),
    )
    assert code == 0, out + err
    (path,) = (tmp_path / "results").rglob("*_doors.json")
    cells = json.loads(path.read_text())["cells"]
    assert sorted(c["driver"] for c in cells) == ["null", "vfs"]
    for cell in cells:  # every expect step read the example source's bytes in the container (the upper os-release)
        assert cell["status"] == "ok", cell.get("error")
        assert cell["metrics"]["expect_files"]["samples"] == [1] * (len(files) * 2)  # each expect step, each sample
    # one CSV: what `run --export-csv` wrote is what `report -f csv` writes
    code, csv_text, err = _invoke("report", str(path), "-f", "csv")
    assert code == 0 and csv_text == (tmp_path / "run.csv").read_text(), err


@pytest.mark.mounts
def test_a_wrong_byte_from_the_source_fails_the_cell_naming_the_file(tmp_path: Path) -> None:
    _installed("layerbench-example-source")
    files = _layers(tmp_path / "layers")
    _scenario(tmp_path / "s.toml", {**files, "etc/os-release": b"NAME=base\n"})  # the lower layer's copy
    code, out, err = _invoke(
        "run",
        str(tmp_path / "s.toml"),
        "-d",
        "vfs",
        "--samples",
        "1",
        "--warmup",
        "0",
        "--work-root",
        str(tmp_path / "work"),
        "--results-dir",
        str(tmp_path / "results"),
        "--label",
        "doors",
    )
    assert code == 1, out + err
    (path,) = (tmp_path / "results").rglob("*_doors.json")
    (cell,) = json.loads(path.read_text())["cells"]
    assert cell["status"] == "error" and "etc/os-release" in cell["error"]
