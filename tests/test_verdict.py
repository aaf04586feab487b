"""The verdict: drivers against the measures people choose by, from the committed reference runs."""

from __future__ import annotations

from pathlib import Path

from layerbench import report
from layerbench.analysis import results
from layerbench.report.table import run_summary
from layerbench.report.verdict import verdict, verdict_text
from layerbench.units import times_text

REFERENCE = Path(__file__).parent.parent / "results" / "reference"
DEFAULT = REFERENCE / "20261130T074758Z_default.json"


def cells(v, key: str) -> dict[str, object]:
    row = next(r for k, _, r in v.rows if k == key)
    return dict(zip(v.labels, row, strict=True))


def test_the_default_run_verdict_marks_the_best_and_says_by_how_much() -> None:
    v = verdict(results.read(DEFAULT), ["overlay2", "btrfs", "vfs"])
    assert v.labels == ["overlay2", "btrfs", "vfs"]
    assert [k for k, _, _ in v.rows] == [
        "startup",
        "disk",
        "copy_up_small",
        "copy_up_big",
        "commit",
        "build",
        "deep_read",
    ]
    disk = cells(v, "disk")
    # per extra container, by the claims' definition: (disk - image) / containers at 50 containers
    assert disk["overlay2"].best and disk["overlay2"].text == "28 KiB (best)"  # type: ignore[attr-defined]
    assert disk["vfs"].text == "98.6 MiB (3,600x larger)"  # type: ignore[attr-defined]
    big = cells(v, "copy_up_big")  # overlay2 copies 256 MiB up; btrfs shares its extents
    assert big["overlay2"].ratio > 1000 and big["btrfs"].ratio < 10  # type: ignore[attr-defined]
    assert cells(v, "commit")["btrfs"].best  # type: ignore[attr-defined]
    assert v.rename[("overlay2", "ext4")] == "no: EXDEV" and v.rename[("btrfs", "btrfs")].startswith("yes")
    text = verdict_text(v)
    assert "startup (128 layers, 1,000 files)" in text and "To start containers fast: overlay2" in text
    assert "Avoid vfs unless nothing else runs here" in text
    assert "Renaming a directory of the image fails on overlay2" in text


def test_ratios_in_words() -> None:
    assert [times_text(r) for r in (1.0, 1.93, 34.4, 2134.0)] == ["best", "1.9x", "34x slower", "2,100x slower"]
    assert times_text(3600.2, "larger") == "3,600x larger"


def test_reports_open_with_the_verdict_then_the_claims() -> None:
    r = report.build(report.read_all([DEFAULT]))
    md = report.render(r, "md")
    assert md.index("## Verdict") < md.index("## Claims") < md.index("## Details")
    page = report.render(report.build(report.read_all([REFERENCE / "20261130T075321Z_quick.json"])), "html")
    assert page.index('id="verdict"') < page.index('id="claims"') < page.index("<figure")
    assert "<td class=best>28 KiB (best)</td>" in page and '<details id="s-copy-up">' in page


def test_the_short_markdown_of_the_default_run_fits_a_pull_request_comment() -> None:
    r = report.build(report.read_all([DEFAULT]))
    short, long = report.render(r, "md"), report.render(r, "md", long=True)
    assert len(short) < 60_000 < len(long)  # GitHub takes 65,536 characters in a comment
    assert "## Verdict" in short and "## Claims" in short and "### copy-up" in short and "Statistics" not in short


def test_the_end_of_a_run_says_the_time_the_warnings_and_what_next() -> None:
    text = run_summary(results.read(DEFAULT), DEFAULT)
    assert text.startswith("== verdict") and "== claims" in text
    assert "87 cells in 4 min 50 s;" in text and f"next: layerbench report {DEFAULT} -o report.html" in text
