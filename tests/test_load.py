"""layerbench.load and the tidy CSV keep every cell dimension: a backing sweep's two filesystems stay apart."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from layerbench.analysis import results
from layerbench.errors import UserError

REFERENCE = Path(__file__).parent.parent / "results" / "reference"
BACKING = REFERENCE / "20261130T081209Z_backing.json"  # copy-up on overlay2 and vfs, on ext4 and on XFS
KEYS = ["scenario", "driver", "backing", "params", "metric"]


def test_a_backing_sweep_keeps_both_filesystems_in_load() -> None:
    # The bug: no backing column, so 32 of the 64 rows could not be told apart.
    frame = results.load(str(BACKING))  # a bare string is one path, not a list of characters
    assert len(frame) == 64 and not frame.duplicated(KEYS).any()
    assert set(frame.backing) == {"ext4", "xfs"}
    copy_up = frame[(frame.metric == "copy_up_ns") & (frame.driver == "overlay2") & (frame.file_size == 64 << 20)]
    by_backing = dict(zip(copy_up.backing, copy_up["median"], strict=True))
    assert by_backing["ext4"] > 100 * by_backing["xfs"]  # ext4 copies 64 MiB; XFS shares its extents


def test_load_has_typed_parameters_and_run_columns() -> None:
    frame = results.load([BACKING])
    assert str(frame.file_size.dtype) == "Int64" and str(frame.depth.dtype) == "Int64"
    assert set(frame["mode"]) == {"append"}
    assert isinstance(frame.started_utc[0], pd.Timestamp) and str(frame.started_utc[0].tz) == "UTC"
    assert frame.run_id[0] == BACKING.stem and frame.kernel[0] == "6.18.44-fc-v857" and frame.host[0] == "vm"


def test_load_raw_gives_every_sample() -> None:
    raw = results.load(BACKING, raw=True)
    doc = results.read(BACKING)
    assert len(raw) == sum(len(m["samples"]) for c in doc["cells"] for m in c["metrics"].values())
    cell = next(c for c in doc["cells"] if c["backing"] == "xfs" and c["driver"] == "vfs")
    mine = raw[
        (raw.backing == "xfs")
        & (raw.driver == "vfs")
        & (raw.params == results.params_text(cell["params"]))
        & (raw.metric == "copy_up_ns")
    ]
    assert list(mine.value) == [float(v) for v in cell["metrics"]["copy_up_ns"]["samples"]]


def test_load_reads_a_directory_like_report(tmp_path: Path) -> None:
    # three small reference files (the whole directory takes seconds to summarise: a benchmark's time, not a test's)
    for path in sorted(REFERENCE.glob("*.json"), key=lambda p: p.stat().st_size)[:3]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "notes.txt").write_text("not a results file")
    frame = results.load(tmp_path)
    labels = {path.stem.split("_", 1)[1] for path in tmp_path.glob("*.json")}  # <stamp>_<label>.json
    assert len(labels) == 3 and set(frame.run) == labels
    with pytest.raises(UserError, match="no results files"):
        results.load(Path(__file__).parent / "data" / "golden")


def test_the_csv_of_a_backing_sweep_has_64_distinguishable_rows() -> None:
    rows = list(csv.DictReader(io.StringIO(results.to_csv(results.read(BACKING)))))
    assert len(rows) == 64 and len({tuple(r[k] for k in KEYS) for r in rows}) == 64
    assert {r["backing"] for r in rows} == {"ext4", "xfs"} and {r["file_size"] for r in rows} == {"4096", "67108864"}


def test_integer_parameters_stay_integers_across_runs_that_lack_them() -> None:
    # the default run's startup cells have `layers`; the zfs run's cells do not: a float64 column read 1000.0
    reference = Path(__file__).parent.parent / "results" / "reference"
    frame = results.load([reference / "20261203T061119Z_after.json", reference / "20261130T075910Z_zfs.json"])
    for column in ("layers", "files", "containers", "file_size"):
        assert str(frame[column].dtype) == "Int64", column
    assert sorted(frame["layers"].dropna().unique().tolist())[:2] == [1, 5]
    assert frame["layers"].isna().any()  # the rows without the parameter stay empty, not 0
