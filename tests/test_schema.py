"""The results schema (harness/analysis/results.schema.json) and the migrations applied in `read`.

`check_results(path)` is the helper other tests call on every results file they write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerbench.analysis import results
from layerbench.errors import UserError
from layerbench.run.runner import RunConfig, run

from .conftest import TINY

DATA = Path(__file__).parent / "data"


def check_results(path: Path) -> dict:
    """Read a results file as the tools do and validate it, raw and migrated, against the schema."""
    raw = json.loads(path.read_text())
    if raw.get("schema_version") == results.SCHEMA_VERSION:
        results.validate(raw)
    doc = results.read(path)
    results.validate(doc)
    return doc


@pytest.mark.parametrize("path", sorted(DATA.glob("*.json")), ids=lambda p: p.name)
def test_every_committed_example_matches_the_schema(path: Path) -> None:
    check_results(path)


@pytest.mark.mounts
def test_every_file_a_run_writes_matches_the_schema(tiny: Path, tmp_path: Path) -> None:
    scenario = tiny
    bad = tmp_path / "bad.toml"
    bad.write_text(
        TINY.replace('name = "tiny"', 'name = "bad"').replace('path = "t.bin"\nmeasure', 'path = "no.bin"\nmeasure')
    )
    config = RunConfig(
        scenarios=(str(scenario), str(bad)),
        drivers=("null",),
        results_dir=tmp_path / "res",
        label="schema",
        work_root=tmp_path / "work",
    )
    doc, path = run(config)
    assert {c["status"] for c in doc["cells"]} == {"ok", "error"}
    written = list((tmp_path / "res").rglob("*.json"))
    assert written == [path]
    for p in written:
        check_results(p)


def test_the_schema_is_shipped_and_is_draft_2020_12() -> None:
    import jsonschema

    s = results.schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)


def test_a_broken_document_is_one_line_naming_the_place() -> None:
    doc = json.loads((DATA / "null.json").read_text())
    doc["cells"][0]["metrics"]["copy_up_ns"]["unit"] = "seconds"
    with pytest.raises(
        UserError,
        match=r"^results document: cells\[0\]\.metrics\.copy_up_ns\.unit: expected one of "
        r'"ns", "bytes", "count", "fraction", got "seconds"$',
    ):
        results.validate(doc)


@pytest.mark.mounts
def test_a_file_a_run_writes_records_its_process_and_older_files_without_it_stay_readable(
    tiny: Path, tmp_path: Path
) -> None:
    scenario = tiny
    doc, path = run(
        RunConfig(
            scenarios=(str(scenario),), drivers=("null",), results_dir=tmp_path / "res", work_root=tmp_path / "work"
        )
    )
    assert doc["run"] == results.run_record()  # this process: host, pid, boot id, start time
    assert results.run_state(doc) == "finished"
    old = json.loads(path.read_text())
    del old["run"]
    path.write_text(json.dumps(old))
    assert "run" not in check_results(path)


def test_migrate_0_to_1_gives_units_scenario_records_and_status() -> None:
    old = json.loads((DATA / "schema0.json").read_text())
    new = results.migrate_0_to_1(old)
    results.validate(new)
    assert new["schema_version"] == 1 and new["status"] == "finished" and new["helpers"] == {}
    assert new["finished_utc"] == old["started_utc"]
    assert new["scenarios"]["copy-up"] == {
        "path": None,
        "sha256": old["scenarios"]["copy-up"],
        "params": {"file_size": [4096, 1048576]},
    }
    cell = new["cells"][0]
    assert cell["metrics"]["copy_up_ns"] == {"unit": "ns", "samples": [5100, 4900, 5000]}
    assert cell["metrics"]["image_disk_bytes"]["unit"] == "bytes"
    assert cell["backing"] == "dir" and cell["error"] is None
    assert old["schema_version"] == 0 and old["cells"][0]["metrics"]["copy_up_ns"] == [5100, 4900, 5000]


def test_read_migrates_and_load_reads_old_files() -> None:
    assert results.read(DATA / "schema0.json")["schema_version"] == results.SCHEMA_VERSION
    frame = results.load([DATA / "schema0.json"])
    assert list(frame["metric"]) == ["copy_up_ns", "image_disk_bytes", "copy_up_ns"]


def test_a_version_with_no_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema_version": -1}))
    with pytest.raises(UserError, match="schema_version -1 is too old to migrate"):
        results.read(path)
