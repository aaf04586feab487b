"""report: golden Markdown of committed runs, CSV/JSON, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerbench import report
from layerbench.analysis import results
from layerbench.cli import main

from .checks import golden

DATA = Path(__file__).parent / "data"
RUNS = [DATA / f"{name}.json" for name in ("copy-up", "null", "layer-sharing", "startup")]


def build(paths: list[Path], baseline: str = "overlay2", with_claims: bool = False) -> report.Report:
    return report.build(report.read_all(paths), baseline, with_claims=with_claims)


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_markdown_is_golden() -> None:
    golden("report-copy-up.md", report.render(build(RUNS[:2]), "md"))


def test_markdown_tables_put_drivers_side_by_side_with_ratios() -> None:
    md = report.render(build(RUNS[:2]), "md")
    assert "| params | metric (median) | overlay2 | btrfs | null |" in md
    assert "| file_size=1 MiB | copy_up_ns | 1.73 ms | 33.6 µs (×1/51) | 4.69 µs (×1/370) |" in md
    assert "## Machine and versions" in md and "mke2fs 1.47.0" in md
    other = report.render(build(RUNS[:2], baseline="btrfs"), "md")
    assert "| params | metric (median) | btrfs | overlay2 | null |" in other


def test_a_missing_baseline_is_a_note_not_an_error() -> None:
    md = report.render(build([DATA / "null.json"]), "md")
    assert "> baseline driver overlay2 is not in these results" in md and "(×" not in md and "Medians.\n" in md


def test_csv_is_the_tidy_one_and_json_has_every_statistic_and_the_ratio() -> None:
    r = build(RUNS[:2])
    text = report.render(r, "csv")
    assert text == results.to_csv(r.doc)  # one CSV: the one `run --export-csv` writes
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:5] == ["host", "scenario", "driver", "backing", "params"]
    row = next(
        x for x in rows if x["driver"] == "btrfs" and x["metric"] == "copy_up_ns" and x["params"] == "file_size=4096"
    )
    assert float(row["median"]) == pytest.approx(38110, rel=0.01)
    doc = json.loads(report.render(r, "json"))
    assert doc["baseline"] == "overlay2" and [run["label"] for run in doc["runs"]] == ["copy-up", "null"]
    assert doc["rows"][0]["ratio"] == 1.0 and doc["claims"] is None
    row = next(
        x
        for x in doc["rows"]
        if x["driver"] == "btrfs" and x["metric"] == "copy_up_ns" and x["params"] == "file_size=4096"
    )
    assert row["ratio"] == pytest.approx(38110 / 590235, rel=0.01)


def test_claims_are_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        report.claims,
        "evaluate",
        lambda doc: [
            {"claim": "btrfs copy-up does not grow with file size", "verdict": "held", "figures": "38 µs vs 34 µs"},
            {"claim": "vfs startup is the slowest", "verdict": "not measured", "figures": "no vfs cells"},
        ],
    )
    r = build(RUNS[:2], with_claims=True)
    md = report.render(r, "md")
    assert "## Claims" in md and "| btrfs copy-up does not grow with file size | held | 38 µs vs 34 µs |" in md
    assert '<td class="not-measured">not measured</td>' in report.render(r, "html")


def test_report_verb_writes_the_format_of_the_suffix(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, _, err = invoke("report", *map(str, RUNS), "-o", str(out))
    assert code == 0, err
    assert out.read_text().startswith("<!DOCTYPE html>")
    code, text, _ = invoke("report", str(DATA / "copy-up.json"), "--format", "md")
    assert code == 0 and text.startswith("# layerbench report")


@pytest.mark.parametrize(
    "args, message",
    [
        (("missing.json",), "missing.json: not a readable results file"),
        (("--format", "md", str(DATA / "golden")), "golden: no results files (*.json) in this directory"),
        ((str(DATA / "copy-up.json"), "-o", "r.pdf"), "cannot tell the format from the suffix"),
    ],
)
def test_report_errors_are_one_line(args: tuple[str, ...], message: str) -> None:
    code, _, err = invoke("report", *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    path.write_text(json.dumps({"schema_version": 99}))
    code, _, err = invoke("report", str(path))
    assert code == 2 and "schema_version 99 is newer than this layerbench understands" in err


def test_results_lists_saved_runs(tmp_path: Path) -> None:
    for p in RUNS[:2]:
        (tmp_path / "vm").mkdir(exist_ok=True)
        (tmp_path / "vm" / p.name).write_text(p.read_text())
    (tmp_path / "vm" / "junk.json").write_text("{}")
    code, out, _ = invoke("results", "--results-dir", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["date", "label", "machine", "scenarios", "drivers", "status", "path"]
    assert lines[1].split()[:6] == ["2026-11-30T06:49:25Z", "copy-up", "vm", "copy-up", "overlay2,btrfs", "finished"]
    assert "unreadable: not a layerbench results file" in out
    code, _, err = invoke("results", "--results-dir", str(tmp_path / "nope"))
    assert code == 2 and "no such results directory" in err


def test_slopes_are_fitted_per_driver_through_the_medians() -> None:
    import numpy as np

    r = build([DATA / "startup.json", DATA / "layer-sharing.json"])
    fitted = {(f.scenario, f.driver, f.metric, f.param): f for f in r.slopes}
    med = {
        (row.driver, row.params): row.median
        for row in r.rows
        if row.scenario == "startup" and row.metric == "startup_ns"
    }
    xs = [1, 8, 32]
    want = np.polyfit(xs, [med[("overlay2", f"layers={x}")] for x in xs], 1)[0]
    assert fitted[("startup", "overlay2", "startup_ns", "layers")].slope == pytest.approx(want)
    assert {d for (s, d, m, p) in fitted if (s, m, p) == ("layer-sharing", "disk_bytes", "containers")} == {
        "overlay2",
        "btrfs",
        "vfs",
    }
    md = report.render(r, "md", long=True)
    assert "| startup_ns vs layers | overlay2 | +10.9 µs per layer | 1.00 | 3 |" in md
    # vfs startup does not grow in a straight line with layers: no slope is claimed for it
    assert "| startup_ns vs layers | vfs | no straight line | 0.60 | 3 |" in md
    assert "| disk_bytes vs containers | vfs | too few values to fit | 1.00 | 2 |" in md
    assert "Fitted slopes" in report.render(r, "html")
    assert json.loads(report.render(r, "json"))["slopes"][0]["text"].endswith("per layer")
    assert "Fitted slopes" not in report.render(build(RUNS[:2]), "md")  # nothing swept: no slopes


def test_slope_text_picks_a_readable_unit() -> None:
    assert report.slope_text(48 * 1024, "bytes", "container") == "+48 KiB per container"
    assert report.slope_text(12_300, "ns", "layer") == "+12.3 µs per layer"
    assert report.slope_text(0.41, "ns", "file") == "+0.41 ns per file"
    assert report.slope_text(-2e6, "ns", "container") == "-2 ms per container"


def test_a_backing_sweep_shows_both_backings_in_every_table() -> None:
    r = build(
        [Path(__file__).parent.parent / "results" / "reference" / "20261130T081209Z_backing.json"], with_claims=True
    )
    assert r.notes == []  # no "is in several runs": the two backings are different cells
    md = report.render(r, "md")
    assert "| params | metric (median) | overlay2 on ext4 | overlay2 on xfs | vfs on ext4 | vfs on xfs |" in md
    assert "| claim | backing | verdict | figures |" in md
    rows = list(csv.DictReader(io.StringIO(report.render(r, "csv"))))
    assert len(rows) == 64 and {x["backing"] for x in rows} == {"ext4", "xfs"}


def test_runs_that_share_cells_get_one_note_saying_how_many_and_which_run_shows() -> None:
    reference = Path(__file__).parent.parent / "results" / "reference"
    default, quick = reference / "20261130T074758Z_default.json", reference / "20261130T075321Z_quick.json"
    shared = {c.key for c in results.read_document(default).cells} & {c.key for c in results.read_document(quick).cells}
    r = build([default, quick])
    assert len(shared) > 1 and len(r.notes) == 1
    assert r.notes[0].startswith(f"{len(shared)} cells are in several of these runs (default, quick)")
    assert f"({len(shared)} from quick)" in r.notes[0]


def test_rows_read_by_key_as_exporters_written_for_dict_rows_do() -> None:
    """A report's rows and slopes are typed (report/rows.py); an exporter plugin written when they were dicts
    (`row["median"]`, `row.get(...)`, `dict(row)`, `pandas.DataFrame(report.rows)`) reads the same values."""
    import pandas as pd

    rep = build(RUNS)
    row = rep.rows[0]
    assert row["median"] == row.median and row.get("host") == row.host and row.get("nope", 7) == 7
    assert dict(row) == row.to_dict() and list(row.keys())[:3] == ["scenario", "driver", "backing"]
    with pytest.raises(KeyError):
        row["nope"]
    frame = pd.DataFrame(rep.rows)
    assert list(frame["median"]) == [r.median for r in rep.rows] and "ratio" in frame.columns
    assert rep.slopes and all(dict(s) == s.to_dict() and s["r2"] == s.r2 for s in rep.slopes)


def test_run_records_read_by_key_as_exporters_written_for_dict_runs_do() -> None:
    """`Report.runs` is typed (`RunRecord`, report/model.py); an exporter plugin written when each run was a dict
    (`run["label"]`, `run["machine"]["name"]`, `run.get("facts")`, `dict(run)`) reads the same values, and the
    JSON report's `runs` is each record's `to_dict`."""
    rep = build(RUNS[:2])
    run = rep.runs[0]
    assert isinstance(run, report.RunRecord) and run["label"] == run.label == "copy-up"
    assert run["machine"]["name"] == run.machine.name and run["machine"].get("nope", 7) == 7
    assert run.get("facts") == run.facts and run.get("nope") is None and dict(run) == run.to_dict()
    with pytest.raises(KeyError):
        run["nope"]
    with pytest.raises(AttributeError):
        run.label = "x"  # type: ignore[misc]  # frozen
    on_disk = json.loads((DATA / "copy-up.json").read_text())
    runs = json.loads(report.render(rep, "json"))["runs"]
    assert runs[0]["machine"] == on_disk["machine"] and list(runs[0]["machine"]) == list(on_disk["machine"])
    assert runs == [json.loads(json.dumps(r.to_dict())) for r in rep.runs]
    keys = ["label", "started_utc", "finished_utc", "status", "machine", "tool", "helpers", "hosts", "facts"]
    assert list(runs[0]) == keys
