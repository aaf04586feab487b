"""Bad input is one line and exit 2: malformed results files, unwritable outputs, unknown parameters, plugins."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from layerbench import hookimpl
from layerbench.analysis import results
from layerbench.cli import drivers as drivers_cli
from layerbench.cli import main
from layerbench.drivers import NullDriver
from layerbench.plugins import load_plugins

DATA = Path(__file__).parent / "data"
GOOD = DATA / "copy-up.json"
ROOT = os.geteuid() == 0


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            doc = doc[key]
        if value is KeyError:
            del doc[last]
        else:
            doc[last] = value

    return change


#: name -> (change to a good file, the field the one-line error must name)
MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "cells-a-number": (_set(["cells"], 5), "cells: expected array, got 5"),
    "sample-a-string": (
        _set(["cells", 0, "metrics", "image_disk_bytes", "samples", 0], "x"),
        "cells[0].metrics.image_disk_bytes.samples[0]: expected number",
    ),
    "null-driver": (_set(["cells", 0, "driver"], None), "cells[0].driver: expected string, got null"),
    "cell-without-metrics": (_set(["cells", 3, "metrics"], KeyError), "cells[3].metrics: missing"),
    "metrics-a-list": (_set(["cells", 0, "metrics"], []), "cells[0].metrics: expected object"),
    "params-a-string": (_set(["cells", 1, "params"], "a=1"), "cells[1].params: expected object"),
    "scenarios-a-list": (_set(["scenarios"], []), "scenarios: expected object"),
    "cell-a-string": (_set(["cells", 0], "cell"), "cells[0]: expected object"),
    "bad-cell-status": (_set(["cells", 0, "status"], "bogus"), "cells[0].status: expected one of"),
    "no-machine": (_set(["machine"], KeyError), "machine: missing"),
    "driver-record-a-number": (_set(["drivers", "overlay2"], 5), "drivers.overlay2: expected object"),
    "param-of-two-kinds": (
        _set(["cells", 1, "params", "file_size"], "big"),
        'cells[1].params.file_size: a string ("big") where cells[0] of scenario copy-up',
    ),
}


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = json.loads(GOOD.read_text())
    out = {}
    for name, (change, _) in MALFORMED.items():
        doc = copy.deepcopy(good)
        change(doc)
        out[name] = tmp_path / f"{name}.json"
        out[name].write_text(json.dumps(doc))
    return out


def invoke(*args: str) -> tuple[int, str, str, BaseException | None]:
    r = CliRunner().invoke(main, list(args))
    crashed = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
    return r.exit_code, r.stdout, r.stderr, crashed


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_file_is_one_line_naming_file_and_field_in_every_verb(
    name: str, bad_files: dict[str, Path]
) -> None:
    path, field = bad_files[name], MALFORMED[name][1]
    for args in (
        ("report", str(path)),
        ("compare", str(GOOD), str(path)),
        ("compare", str(path), str(GOOD)),
        ("claims", str(path)),
        ("report", str(path), "-f", "html"),
    ):
        code, _, err, crashed = invoke(*args)
        assert crashed is None, f"{args}: {crashed!r}"
        assert code == 2 and err.startswith(f"layerbench: error: {path}: {field}"), (args, err)
        assert len(err.strip().splitlines()) == 1


def test_results_lists_bad_files_as_unreadable_and_shows_the_others(bad_files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(GOOD.read_text())
    code, out, err, crashed = invoke("results", "--results-dir", str(tmp_path), "--json")
    assert crashed is None and code == 0, err
    rows = {Path(r["path"]).stem: r for r in json.loads(out)}
    assert rows["good"]["status"] == "finished" and rows["good"]["scenarios"] == "copy-up"
    for name, (_, field) in MALFORMED.items():
        assert rows[name]["status"] == f"unreadable: {field}" or rows[name]["status"].startswith(
            f"unreadable: {field}"
        ), rows[name]
    code, out, _, crashed = invoke("results", "--results-dir", str(tmp_path))
    assert crashed is None and code == 0 and len(out.splitlines()) == len(MALFORMED) + 2


@pytest.mark.parametrize("text", ["[]", '{"schema_version": 1, "x": NaN}', "\xff", "{"])
def test_not_json_or_not_a_number_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(text.encode("latin-1"))
    code, _, err, crashed = invoke("report", str(path))
    assert crashed is None and code == 2 and err.startswith(f"layerbench: error: {path}: ")


def test_every_shipped_example_still_reads() -> None:
    paths = sorted(DATA.glob("*.json"))
    assert paths, f"no example results under {DATA}"
    for path in paths:
        doc = results.read(path)  # a file that no longer reads raises, naming it
        assert doc["schema_version"] == results.SCHEMA_VERSION and isinstance(doc["cells"], list), path


# -- output paths, checked before anything runs --------------------------------------------


@contextmanager
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only tmpfs: root ignores permission bits, not a read-only mount."""
    if not ROOT:
        pytest.skip("needs root to mount a read-only tmpfs")
    point = tmp_path / "ro"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m,nodev,nosuid", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def _run(scenario: Path, tmp_path: Path, *extra: str) -> tuple[int, str, BaseException | None]:
    code, _, err, crashed = invoke(
        "run",
        str(scenario),
        "-d",
        "null",
        "--work-root",
        str(tmp_path / "work"),
        *(("--results-dir", str(tmp_path / "res")) if "--results-dir" not in extra else ()),
        *extra,
    )
    return code, err, crashed


def test_report_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    code, _, err, crashed = invoke("report", str(GOOD), "-o", str(tmp_path / "nope" / "r.md"))
    assert crashed is None and code == 2
    assert err == f"layerbench: error: -o {tmp_path / 'nope' / 'r.md'}: no such directory {tmp_path / 'nope'}\n"


@pytest.mark.mounts
def test_read_only_outputs_are_refused_before_any_cell_runs(
    starts: Callable[[list[int], int], Path], tmp_path: Path
) -> None:
    scenario = starts([1], 1)
    with read_only_dir(tmp_path) as ro:
        code, _, err, crashed = invoke("report", str(GOOD), "-o", str(ro / "r.md"))
        assert crashed is None and code == 2
        assert err.startswith(f"layerbench: error: -o {ro / 'r.md'}: cannot write")
        code, err, crashed = _run(scenario, tmp_path, "--export-csv", str(ro / "x.csv"))
        assert crashed is None and code == 2 and err.startswith(f"layerbench: error: --export-csv {ro / 'x.csv'}: ")
        assert "Read-only file system" in err and "[1/1]" not in err and not (tmp_path / "res").exists()
        code, err, crashed = _run(scenario, tmp_path, "--results-dir", str(ro / "res"))
        assert crashed is None and code == 2 and err.startswith(f"layerbench: error: --results-dir {ro / 'res'}: ")
        assert "[1/1]" not in err and not (tmp_path / "work").exists()


# -- parameters -------------------------------------------------------------------------------


def test_an_unknown_parameter_is_refused_with_the_known_ones() -> None:
    code, _, err, crashed = invoke("run", "copy-up", "commit", "-p", "nosuch=1", "-d", "null")
    assert crashed is None and code == 2 and len(err.strip().splitlines()) == 1
    assert (
        err.startswith("layerbench: error: --param nosuch: no chosen scenario has this parameter; their parameters: ")
        and "file_size" in err
    )


# -- plugins ------------------------------------------------------------------------------------


class _Duplicate:
    __name__ = "dup (lb_dup)"

    @hookimpl
    def layerbench_register_drivers(self, registry):
        registry.add(NullDriver)


class _Raises:
    __name__ = "bug (lb_bug)"

    @hookimpl
    def layerbench_register_drivers(self, registry):
        raise ValueError("a bug in the plugin")


@pytest.mark.mounts
def test_a_broken_plugin_is_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = load_plugins(extra=(_Duplicate(), _Raises()))
    monkeypatch.setattr(drivers_cli, "default_plugins", lambda: plugins)
    code, _, err, crashed = invoke("drivers")
    assert crashed is None and code == 0
    lines = [line for line in err.splitlines() if "lb_" in line]
    assert sorted(lines) == [
        "broken plugin bug (lb_bug): a bug in the plugin",
        "broken plugin dup (lb_dup): driver name 'null' is already registered by plugin "
        + plugins.registry.origin["null"],
    ]
