from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest

from layerbench.analysis import results
from layerbench.analysis.stats import SUMMARY_FIELDS, summarize
from layerbench.errors import UserError
from layerbench.run import machine


def test_summary_is_median_quartiles_min_max() -> None:
    s = summarize([5, 1, 3, 2, 4])
    assert {k: s[k] for k in SUMMARY_FIELDS} == {"n": 5, "median": 3.0, "p25": 2.0, "p75": 4.0, "min": 1.0, "max": 5.0}


def _doc() -> dict:
    doc = results.new_document("t", machine.machine_info(), machine.tool_info())
    doc["cells"].append(
        {
            "scenario": "s",
            "driver": "d",
            "params": {"b": 2, "a": 1},
            "status": "ok",
            "backing": "dir",
            "error": None,
            "metrics": {"x_ns": {"unit": "ns", "samples": [1, 2, 3]}},
        }
    )
    return doc


def test_tidy_csv_has_the_documented_columns() -> None:
    lines = results.to_csv(_doc()).splitlines()
    assert lines[0] == "host,scenario,driver,backing,params,a,b,metric,unit,n,median,p25,p75,min,max"
    assert lines[1].startswith(f"{_doc()['machine']['name']},s,d,dir,a=1;b=2,1,2,x_ns,ns,3,2.0,")


def test_save_is_atomic_and_load_gives_a_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    results.save(_doc(), path)
    before = path.read_bytes()

    def half_then_full_disk(doc: object, f: io.TextIOBase, **kw: object) -> None:
        f.write('{"schema_version": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.json, "dump", half_then_full_disk)
    with pytest.raises(OSError):
        results.save(_doc(), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # a plain write would have truncated the file
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # and no temporary file is left
    frame = results.load([path])
    assert list(frame["metric"]) == ["x_ns"] and frame["median"][0] == 2.0


def test_save_replaces_the_file_by_a_rename_never_writing_into_it(tmp_path: Path) -> None:
    """A reader that opened the old file keeps reading the old file whole: the new one is another
    inode renamed over it. Any write into the file (truncate, then write) would change what it reads."""
    path = tmp_path / "r.json"
    results.save(_doc(), path)
    before = path.read_bytes()
    newer = _doc()
    newer["cells"][0]["metrics"]["x_ns"]["samples"] = [7, 8, 9]
    with open(path, "rb") as reader:
        results.save(newer, path)
        assert os.fstat(reader.fileno()).st_ino != path.stat().st_ino
        assert reader.read() == before
    assert results.read(path)["cells"][0]["metrics"]["x_ns"]["samples"] == [7, 8, 9]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema_version": results.SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="newer than this layerbench understands"):
        results.read(path)
