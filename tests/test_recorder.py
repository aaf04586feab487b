"""CellRecorder: what a cell's samples keep, as its steps record them."""

from __future__ import annotations

from layerbench.analysis import results
from layerbench.analysis.results_model import CellResult, Metric, RunDocument
from layerbench.images.layer_apply import SKIPPED_LISTED, LayerStats
from layerbench.report.table import comparison_table
from layerbench.run.recorder import SKIPPED_KEPT, CellRecorder


def test_a_warm_up_samples_values_are_dropped_but_its_outcomes_counted() -> None:
    rec = CellRecorder(overhead_ns=0)
    rec.warm = True
    rec.record("startup_ns", 500)
    rec.outcome("step[1] rename", "EXDEV")
    rec.warm = False
    rec.record("startup_ns", 700)
    rec.outcome("step[1] rename", "EXDEV")
    assert rec.metrics() == {"startup_ns": Metric("ns", (700,))}
    assert rec.outcome_counts() == {"step[1] rename": {"EXDEV": 2}}
    assert rec.timed_ns == 700  # the warm-up's clock is no measured time


def test_the_timers_cost_comes_off_ns_values_only_and_never_below_zero() -> None:
    rec = CellRecorder(overhead_ns=100)
    rec.record("startup_ns", 350)
    rec.record("startup_ns", 60)
    rec.record("written_bytes", 350)
    rec.add("image_disk_bytes", 4096)
    assert rec.samples == {"startup_ns": [250, 0], "written_bytes": [350], "image_disk_bytes": [4096]}
    assert rec.timed_ns == 410  # the timed regions as taken, before the cost comes off
    assert rec.metrics()["written_bytes"].unit == "bytes"


def test_what_a_forked_child_recorded_reaches_the_parent() -> None:
    child, parent = CellRecorder(10), CellRecorder(10)
    child.record("copy_up_ns", 110)
    child.outcome("step[0] write", "EROFS")
    child.outcome("step[0] write", "EROFS")
    parent.merge(child.to_plain())
    assert parent.samples == {"copy_up_ns": [100]}
    assert parent.outcome_counts() == {"step[0] write": {"EROFS": 2}}
    assert parent.timed_ns == 110


def test_what_imports_skipped_is_kept_once_each_capped_in_the_record_and_said_in_one_line() -> None:
    child, parent = CellRecorder(), CellRecorder()
    assert parent.skipped_at_import() is None  # nothing skipped: no field
    hostile = [f"dev/tty{i}: device nodes need root" for i in range(1000)]
    child.skip(hostile)
    child.skip(hostile[:5])  # the next sample's build skips them again
    parent.merge(child.to_plain())  # a rootless cell's child measured it
    record = parent.skipped_at_import()
    assert record == {"count": 1000, "entries": hostile[:SKIPPED_KEPT]}
    cell = CellResult("cold-start", "overlay2-rootless", {}, "ext4", skipped_at_import=record)
    doc = RunDocument.from_dict(
        {"schema_version": results.SCHEMA_VERSION, "created": "2024-01-01T00:00:00Z", "cells": [cell.to_dict()]}
    )
    shown = "; ".join(hostile[:3])
    line = f"skipped at import: cold-start overlay2-rootless on ext4: 1000 entries ({shown}; 997 more)"
    assert line in comparison_table(doc).splitlines()


def test_what_an_import_skips_is_bounded_in_memory_from_the_layer_up() -> None:
    """A hostile image of a million device nodes: each layer lists the first SKIPPED_LISTED, and so does a cell."""
    stats, recorder = LayerStats(), CellRecorder()
    for i in range(SKIPPED_LISTED + 500):
        stats.skip(f"dev/tty{i}: device nodes need root")
    assert (
        len(stats.skipped) == SKIPPED_LISTED
        and stats.skipped[-1] == f"dev/tty{SKIPPED_LISTED - 1}: device nodes need root"
    )
    recorder.skip(stats.skipped)
    recorder.skip([f"other{i}" for i in range(10)])
    assert recorder.skipped_at_import() == {"count": SKIPPED_LISTED, "entries": stats.skipped[:SKIPPED_KEPT]}
