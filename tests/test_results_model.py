"""The typed results model (harness/analysis/results_model.py): one key, one median, one slicing."""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from layerbench.analysis import compare, results
from layerbench.analysis.results_model import (
    CellKey,
    CellResult,
    Machine,
    Metric,
    RunDocument,
    Tool,
    median,
    run_document,
)
from layerbench.analysis.stats import summarize
from layerbench.plugins import default_plugins
from layerbench.run import resume
from layerbench.run.plan import Cell
from layerbench.run.progress import CellEvent
from layerbench.run.sampling import time_split_lines
from layerbench.scenario import load_scenario

DATA = Path(__file__).parent / "data"


def cell(driver: str, backing: str | None = None, host: str | None = None, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": "copy-up",
        "driver": driver,
        "params": params,
        "status": "ok",
        "error": None,
        "metrics": {"copy_up_ns": {"unit": "ns", "samples": [4, 1, 3, 2]}},
    }
    if backing is not None:
        out["backing"] = backing
    if host is not None:
        out["host"] = host
    return out


def cell_key(record: dict[str, Any]) -> CellKey:
    return CellResult.from_dict(record).key


def test_the_key_is_scenario_driver_backing_params_host_in_that_order() -> None:
    key = cell_key(cell("overlay2", "ext4", "host-a", mode="append", file_size=4096))
    assert key == ("copy-up", "overlay2", "ext4", "file_size=4096;mode=append", "host-a")
    assert (key.scenario, key.driver, key.backing, key.params, key.host) == tuple(key)
    # what a file without backing or host says is "" (one place reads `get("host") or ""`)
    assert cell_key(cell("vfs")) == ("copy-up", "vfs", "", "", "")
    assert cell_key({**cell("vfs"), "host": None, "backing": None}) == cell_key(cell("vfs"))
    # a planned cell's parts give the same key as its record
    assert CellKey.of("copy-up", "overlay2", "ext4", {"mode": "append", "file_size": 4096}, "host-a") == key


def test_there_is_one_cell_key() -> None:
    assert not hasattr(resume, "cell_key")  # the second one, with another field order, is gone
    assert "cell_key" not in results.__all__
    # the dict version, documented in 0.x's CHANGELOG, still works for a release, with a warning
    with pytest.warns(DeprecationWarning, match=r"results\.cell_key is deprecated; .*CellResult\.key"):
        old = results.cell_key
    record = cell("overlay2", "ext4", "host-a", file_size=4096)
    assert old(record) == cell_key(record) == CellKey.of("copy-up", "overlay2", "ext4", {"file_size": 4096}, "host-a")


def test_a_cell_planned_for_any_host_is_done_once_it_is_done_on_one() -> None:
    """The runner's resume filter: the done set holds each cell's key and its any-host key."""
    done = {k for c in [cell("overlay2", "ext4", "host-a")] for k in (cell_key(c), cell_key(c).any_host())}
    assert CellKey.of("copy-up", "overlay2", "ext4", {}, None) in done
    assert CellKey.of("copy-up", "overlay2", "ext4", {}, "host-a") in done
    assert CellKey.of("copy-up", "overlay2", "ext4", {}, "host-b") not in done
    assert CellKey.of("copy-up", "overlay2", "xfs", {}, None) not in done


@pytest.mark.parametrize(
    ("samples", "expected"),
    [([4, 1, 3, 2], 2.5), ([5, 1, 3], 3.0), ([7], 7.0), ([1e9, 3e9], 2e9), ([], None)],
)
def test_the_median_is_the_middle_or_the_mean_of_the_two_middle_ones(
    samples: list[float], expected: float | None
) -> None:
    got = median(samples)
    assert got == expected and (got is None or isinstance(got, float))


def test_every_headline_median_is_the_models() -> None:
    """The summary's median (reports, load), a cell's and compare's agree on a real results file."""
    doc = results.read(DATA / "copy-up.json")
    run = run_document(doc)
    for c in run.cells:
        for name, metric in c.metrics.items():
            assert c.median(name) == metric.median == summarize(metric.samples)["median"]
            assert c.median(name) == statistics.median(metric.samples)
    changes = compare.compare(doc, doc)[0]
    by_key = {c.key: c for c in run.cells}
    for change in changes:
        found = by_key[CellKey(change.scenario, change.driver, change.backing, change.params, change.host)]
        assert change.old == change.new == found.median(change.metric)


def test_a_missing_metric_has_no_median_and_no_samples() -> None:
    one = CellResult.from_dict(cell("overlay2"))
    assert one.median("nope") is None and one.samples("nope") == []
    assert one.samples("copy_up_ns") == [4.0, 1.0, 3.0, 2.0]


def test_by_host_splits_a_fleet_run_into_its_hosts() -> None:
    run = run_document(results.read(DATA / "fleet-2hosts.json"))
    parts = run.by_host()
    assert [h for h, _ in parts] == ["lb-h8-a", "lb-h8-b"]
    for host, part in parts:
        assert part.cells and all(c.host == host for c in part.cells)
    assert sum(len(p.cells) for _, p in parts) == len(run.cells)
    assert run.several_hosts and run.hosts == ["lb-h8-a", "lb-h8-b"]
    one = run.with_cells(c for c in run.cells if c.host == "lb-h8-a")
    assert one.by_host() == [("", one)] and not one.several_hosts


def test_by_backing_keeps_drivers_of_one_backing_in_every_part() -> None:
    run = run_document({"cells": [cell("overlay2", "ext4"), cell("overlay2", "xfs"), cell("btrfs", "btrfs")]})
    parts = run.by_backing()
    assert [b for b, _ in parts] == ["ext4", "xfs"]  # btrfs ran on one backing: no part of its own
    assert [[(c.driver, c.backing) for c in p.cells] for _, p in parts] == [
        [("overlay2", "ext4"), ("btrfs", "btrfs")],
        [("overlay2", "xfs"), ("btrfs", "btrfs")],
    ]
    assert run.swept_backings
    flat = run_document({"cells": [cell("overlay2", "ext4"), cell("btrfs", "btrfs")]})
    assert flat.by_backing() == [("", flat)] and not flat.swept_backings


def test_the_model_gives_back_the_json_document(tmp_path: Path) -> None:
    doc = results.read(DATA / "fleet-2hosts.json")
    before = copy.deepcopy(doc)
    run = run_document(doc)
    assert run_document(run) is run  # the builder takes a model too
    assert run.to_dict() == before and doc == before  # a view: the document is not changed
    results.validate(run.to_dict())
    # a slice's document is the same run with the slice's cells, still valid
    host, part = run.by_host()[1]
    sliced = part.to_dict()
    results.validate(sliced)
    assert {c["host"] for c in sliced["cells"]} == {host} and sliced["label"] == doc["label"]
    path = tmp_path / "x.json"
    results.save(sliced, path)
    assert json.loads(path.read_text())["cells"] == [c for c in before["cells"] if c.get("host") == host]


def test_run_fields_and_styles_come_from_the_document() -> None:
    run = RunDocument.from_dict(
        {"label": "r", "drivers": {"overlay2": {"style": "union"}}, "cells": [cell("overlay2"), cell("vfs")]}
    )
    assert run.label == "r" and run.style("overlay2") == "union" and run.style("vfs") == ""
    failed = {**cell("vfs", mode="append"), "status": "error", "error": "boom"}
    run = run.with_cells([*run.cells, CellResult.from_dict(failed)])
    assert [c.driver for c in run.ok()] == ["overlay2", "vfs"]
    assert [c.driver for c in run.ok("copy-up", mode="append")] == []
    assert [(c.status, c.error) for c in run.cells if not c.ok] == [("error", "boom")]


def test_one_way_to_name_a_cell() -> None:
    one = CellResult.from_dict(cell("overlay2", "ext4", "host-a", file_size=1048576))
    assert one.name() == "copy-up overlay2 on ext4 @ host-a (file_size=1048576)"
    assert one.name(human=True, host=False) == "copy-up overlay2 on ext4 (file_size=1 MiB)"
    assert one.name(params_first=True) == "copy-up overlay2 file_size=1048576 on ext4 @ host-a"
    assert CellResult.from_dict(cell("vfs")).name() == "copy-up vfs"
    assert one.key.name() == one.name()


def test_the_runs_lines_name_a_cell_the_one_way(tiny: Path) -> None:
    """A run's own lines name a cell through CellKey.name too: the planned cell (its errors, the [i/n] lines,
    `@ host` as everywhere), the progress line (parameters as people write them) and the slowest cells."""
    planned = Cell(load_scenario(tiny), default_plugins().driver("null"), {"containers": 2}, "dir", host="host-a")
    assert planned.describe() == "tiny null containers=2 on dir @ host-a" == planned.key.name(params_first=True)
    anywhere = dataclasses.replace(planned, host=None)  # a fleet cell for any host, named with the one it ran on
    assert anywhere.describe() == "tiny null containers=2 on dir"
    assert anywhere.describe("host-b") == "tiny null containers=2 on dir @ host-b"
    assert planned.describe("host-b") == planned.describe()  # a cell planned for a host is named by it
    assert CellEvent("planned", 1, 2, "tiny", "null", {"file_size": 4096}, "ext4").describe() == (
        "tiny null on ext4 (file_size=4 KiB)"
    )
    slow = cell("overlay2", "ext4", "host-a", file_size=4096) | {
        "time_split_s": {"setup": 1.0, "timed": 0.5, "sampling": 2.0, "teardown": 0.5},
        "samples": 3,
        "stop_reason": "pinned",
    }
    doc = results.new_run("r", {"name": "m"}, {"name": "layerbench", "version": "0"})
    doc.add(CellResult.from_dict(slow))
    line = time_split_lines(doc)[-1]
    assert line.startswith("  copy-up overlay2 file_size=4096 on ext4 @ host-a: 4.0 s = "), line


REFERENCE = Path(__file__).parent.parent / "results" / "reference"


@pytest.mark.parametrize("path", sorted([*REFERENCE.glob("*.json"), *DATA.glob("*.json")]), ids=lambda p: p.name)
def test_every_results_file_round_trips_through_the_model_byte_for_byte(path: Path) -> None:
    """What a run writes is the model's `to_dict`: a file read into the model and written back is the same
    JSON, key order and nulls (`loop_direct_io` of a store without a loop) included."""
    doc = results.read(path)
    again = RunDocument.from_dict(doc).to_dict()
    assert json.dumps(again, indent=1) == json.dumps(doc, indent=1)
    run = results.read_document(path)
    assert run.to_dict() == doc
    # the machine and the tool are records, each its own JSON again, key order and nulls included
    assert isinstance(run.machine, Machine) and isinstance(run.tool, Tool)
    assert (
        json.dumps(run.machine.to_dict()) == json.dumps(doc["machine"]) and run.machine.name == doc["machine"]["name"]
    )
    assert json.dumps(run.tool.to_dict()) == json.dumps(doc["tool"]) and run.tool.version == doc["tool"]["version"]


def test_a_cell_built_by_the_runner_writes_its_fields_in_the_runs_order() -> None:
    built = CellResult(
        "copy-up", "overlay2", {"file_size": 4096}, "ext4", status="running", warmup=1, outcome_counts={}, inspect={}
    )
    built.time_split_s, built.template = {"setup": 0.0}, False
    built.loop_direct_io, built.mkfs_options = None, ""
    built.sample_count, built.duration_s = 3, 1.5
    built.metrics = {"copy_up_ns": Metric("ns", (3, 1, 2))}
    built.status = "ok"
    assert list(built.to_dict()) == [
        "scenario", "driver", "params", "backing", "status", "error", "warmup", "metrics", "outcomes", "inspect",
        "time_split_s", "template", "loop_direct_io", "mkfs_options", "samples", "duration_s",
    ]  # fmt: skip
    assert built.to_dict()["metrics"] == {"copy_up_ns": {"unit": "ns", "samples": [3, 1, 2]}}
    assert built.get("samples") == 3 and built.get("loop_direct_io") is None and built.get("images", []) == []
    # a cell interrupted before it opened its store has no loop_direct_io at all; a fleet's cell names its host
    bare = CellResult("copy-up", "vfs", {}, "dir", status="interrupted", error="interrupted", host="h1")
    assert bare.to_dict() == {
        "scenario": "copy-up",
        "driver": "vfs",
        "params": {},
        "backing": "dir",
        "status": "interrupted",
        "error": "interrupted",
        "metrics": {},
        "host": "h1",
    }
    assert CellResult.from_dict(bare.to_dict()).to_dict() == bare.to_dict()


def test_a_new_runs_document_is_valid_and_ends_with_its_status() -> None:
    run = results.new_run("r", {"name": "m", "kernel": "6.1"}, {"name": "layerbench", "version": "0"})
    assert run.to_dict() == results.new_document("r", run.machine, run.tool) | {
        "started_utc": run.started_utc,
        "run": run.run,
    }
    run.add(CellResult.from_dict(cell("overlay2", "ext4")))
    run.end("finished", "2026-01-01T00:00:00Z")
    doc = run.to_dict()
    results.validate(doc)
    assert (doc["status"], doc["finished_utc"], len(doc["cells"])) == ("finished", "2026-01-01T00:00:00Z", 1)
    assert list(doc)[:12] == [
        "schema_version", "label", "started_utc", "finished_utc", "status", "machine", "tool", "run", "helpers",
        "drivers", "scenarios", "cells",
    ]  # fmt: skip


MACHINE = {"name": "m", "kernel": "6.1", "cpus": None, "gpu": "none", "arch": "x86_64", "order": 1, "extra": [2]}


def test_a_machine_keeps_keys_it_does_not_name_and_its_nulls_in_their_place() -> None:
    """An older or a newer writer's machine record: keys the model does not name (`gpu`, even `order` and
    `extra`) are kept, a null stays a null and an absent field stays absent, in the file's order."""
    machine = Machine.from_dict(MACHINE)
    assert (machine.name, machine.kernel, machine.cpus, machine.arch, machine.disk) == (
        "m",
        "6.1",
        None,
        "x86_64",
        None,
    )
    assert machine.extra == {"gpu": "none", "order": 1, "extra": [2]}
    assert json.dumps(machine.to_dict()) == json.dumps(MACHINE)
    # through a whole document, written and read again
    doc = {**results.new_document("r", MACHINE, {"version": "0", "name": "layerbench", "build": "x"}), "cells": []}
    again = RunDocument.from_dict(json.loads(json.dumps(RunDocument.from_dict(doc).to_dict())))
    assert json.dumps(again.to_dict()) == json.dumps(doc)
    assert list(again.tool.to_dict()) == ["version", "name", "build"] and again.tool.extra == {"build": "x"}


def test_a_machine_reads_by_key_as_the_dict_it_was() -> None:
    machine = Machine.from_dict(MACHINE)
    assert machine["name"] == "m" and machine.get("disk") is None and machine.get("gpu") == "none"
    assert "cpus" in machine and "disk" not in machine and dict(machine) == MACHINE and {**machine} == MACHINE
    assert machine == MACHINE and len(machine) == len(MACHINE) and list(machine) == list(MACHINE)
    with pytest.raises(KeyError):
        machine["disk"]
    # a field set since it was read comes after the keys read, before nothing is lost
    grown = dataclasses.replace(machine, disk="ext4 on vda")
    assert list(grown.to_dict()) == [*MACHINE, "disk"] and grown["disk"] == "ext4 on vda"
    # built by code: the fields set, in the order a run writes them
    built = Machine(kernel="6.1", name="m", root=True)
    assert list(built.to_dict()) == ["name", "kernel", "root"] and Machine().to_dict() == {}


def test_a_document_given_dicts_for_machine_and_tool_holds_the_records() -> None:
    run = RunDocument(label="r", machine={"name": "m", "kernel": "6.1"}, tool={"name": "layerbench"})  # type: ignore[arg-type]
    assert isinstance(run.machine, Machine) and run.machine.name == "m" and isinstance(run.tool, Tool)
    assert run.to_dict()["machine"] == {"name": "m", "kernel": "6.1"}
    assert RunDocument().to_dict()["machine"] == {} and RunDocument.from_dict({"cells": []}).machine == {}
