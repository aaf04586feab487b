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
    # the verdict last (what a 45-line terminal still shows), the claims first
    assert text.startswith("== claims") and text.index("== claims") < text.index("== verdict")
    assert text.rstrip().splitlines()[-1].startswith("Renaming a directory of the image fails")
    assert "87 cells in 4 min 50 s;" in text and f"next: layerbench report {DEFAULT} -o report.html" in text


AFTER = REFERENCE / "20261203T061729Z_after-off.json"


def test_the_verdict_has_a_memory_row_and_weighs_disk_and_memory_per_node() -> None:
    v = verdict(results.read(AFTER), ["overlay2", "btrfs", "vfs"])
    memory = cells(v, "memory")  # page-cache-sharing at 20 containers: each further container's page cache
    assert memory["overlay2"].text == "0 B (best)"  # type: ignore[attr-defined]
    assert memory["btrfs"].text == memory["vfs"].text == "97.5 MiB (+97.5 MiB)"  # type: ignore[attr-defined]
    title = next(t for k, t, _ in v.rows if k == "memory")
    assert title == "page cache per further container (20 containers)"
    text = verdict_text(v)
    assert "To share the page cache between containers of one image: overlay2, 0 B; btrfs +97.5 MiB" in text
    node = next(line for line in v.advice if "on one node" in line)
    # disk alone says btrfs 2.4x; with its page cache each further btrfs container costs an image of memory
    assert node.startswith(
        "To run many containers of one image on one node (disk + page cache per further container): "
        "overlay2, 28 KiB (28 KiB + 0 B); btrfs 97.6 MiB (67.2 KiB + 97.5 MiB, 3,600x larger)"
    )


def partial(doc: dict[str, object], scenarios: set[str], drivers: set[str]) -> dict[str, object]:
    cells_ = [c for c in doc["cells"] if c["scenario"] in scenarios and c["driver"] in drivers]  # type: ignore[attr-defined]
    return {**doc, "cells": cells_}


def test_a_driver_a_measured_row_marks_is_never_advised_and_what_is_missing_is_said() -> None:
    # `run --quick copy-up startup -d overlay2 -d vfs`: vfs is fastest to copy up and 90x slower to start;
    # disk per container (layer-sharing) was not measured, so the avoid rule cannot be decided
    quick = partial(
        results.read(REFERENCE / "20261130T075321Z_quick.json"), {"copy-up", "startup"}, {"overlay2", "vfs"}
    )
    v = verdict(quick)
    advised = [line.split(":")[1].split(",")[0].strip() for line in v.advice if line.startswith("To ")]
    assert advised and "vfs" not in advised
    assert "To write into big files that came with the image: overlay2, 90.7 ms. Faster, but not advised: vfs" in (
        "\n".join(v.advice)
    )
    assert (
        "Not advised: vfs, 90x slower to start than the best; whether to avoid it needs the disk per container "
        "(scenario layer-sharing) too, not measured." in v.advice
    )


def test_the_end_of_a_run_says_how_it_measured_and_folds_the_claims_it_did_not() -> None:
    quick = results.read(REFERENCE / "20261130T075321Z_quick.json")
    text = run_summary(quick, DEFAULT)
    assert "run: quick suite (--quick: each scenario's [quick] values and samples); 1 to 3 samples per cell" in text
    assert "stores: a fresh btrfs/ext4 filesystem per cell on a loop device" in text
    from layerbench.analysis.claims import CLAIMS

    folded = f"[not measured] {len(CLAIMS) - 6} of {len(CLAIMS)} claims: these cells do not measure them"
    assert folded in text and text.count("[not measured]") == 1
    after = run_summary(results.read(AFTER), AFTER)
    assert "run: full suite; 1 to 10 samples per cell" in after and "on a loop device, direct I/O" in after


def test_the_console_table_writes_sizes_as_people_do() -> None:
    from layerbench.report.table import comparison_table

    text = comparison_table(results.read(Path(__file__).parent / "data" / "copy-up.json"))
    assert "file_size=1 MiB  copy_up_ns" in text and "file_size=1048576" not in text


def _cold_cell(driver: str, recipe: str, link: str, cold_ms: float, warm_ms: float) -> dict[str, object]:
    ms = 1_000_000
    return {
        "scenario": "cold-start",
        "driver": driver,
        "backing": "ext4",
        "params": {"recipe": recipe, "link": link, "runtime": "crun"},
        "status": "ok",
        "metrics": {
            "cold_start_ns": {"unit": "ns", "samples": [int(cold_ms * ms), int(cold_ms * ms) + 2]},
            "warm_start_ns": {"unit": "ns", "samples": [int(warm_ms * ms), int(warm_ms * ms) + 2]},
        },
    }


def test_the_verdict_leads_with_cold_and_warm_start_of_the_python_image_at_100_mbit() -> None:
    doc = {
        "cells": [
            _cold_cell("overlay2", "busybox", "loopback", 150, 40),
            _cold_cell("overlay2", "python", "loopback", 900, 150),
            _cold_cell("overlay2", "python", "100mbit", 6000, 140),
            _cold_cell("btrfs", "python", "100mbit", 7200, 160),
            _cold_cell("btrfs", "busybox", "loopback", 160, 45),
            _cold_cell("vfs", "busybox", "loopback", 400, 45),  # no python cell: n/a in the python rows
        ]
    }
    v = verdict(doc, ["overlay2", "btrfs", "vfs"])
    assert [k for k, _, _ in v.rows] == ["cold_start", "warm_start"]
    titles = [t for _, t, _ in v.rows]
    assert titles == [
        "cold start to ready (python, 100 Mbit/s, crun)",
        "warm start to ready (python, crun; cells at 100 Mbit/s)",
    ]
    cold = cells(v, "cold_start")
    assert cold["overlay2"].best and cold["btrfs"].text == "7.2 s (1.2x)" and cold["vfs"] is None  # type: ignore[attr-defined]
    text = verdict_text(v)
    assert text.index("cold start to ready") < text.index("warm start to ready")
    assert "To start an application's container cold, pulled to ready (python, 100 Mbit/s, crun): overlay2, 6 s" in text


def test_without_the_python_cells_the_cold_start_rows_say_what_they_hold() -> None:
    doc = {
        "cells": [
            _cold_cell("overlay2", "busybox", "loopback", 150, 40),
            _cold_cell("vfs", "busybox", "loopback", 400, 45),
            _cold_cell("vfs", "python", "loopback", 900, 150),  # one driver only: not the row's image
        ]
    }
    v = verdict(doc, ["overlay2", "vfs"])
    assert v.rows[0][1] == "cold start to ready (busybox, loopback, crun)"
    assert cells(v, "cold_start")["vfs"].text == "400 ms (2.7x)"  # type: ignore[attr-defined]


def _startup_cell(driver: str, ms: list[float]) -> dict[str, object]:
    return {
        "scenario": "startup",
        "driver": driver,
        "backing": "ext4",
        "params": {"layers": 8, "files": 100},
        "status": "ok",
        "metrics": {"startup_ns": {"unit": "ns", "samples": [int(x * 1_000_000) for x in ms]}},
    }


def test_a_driver_this_run_cannot_tell_from_the_best_is_tied_for_best() -> None:
    """Tied: under compare's THRESHOLD (10%) above the best and not significantly different from its samples
    (Mann-Whitney U). Apart by either rule, it is ranked as before."""
    doc = {
        "cells": [
            _startup_cell("overlay2", [10.0, 10.4, 10.8, 11.2, 11.6]),
            _startup_cell("btrfs", [10.2, 10.6, 11.0, 11.4, 11.8]),  # 1.9% slower, the samples interleave: tied
            _startup_cell("vfs", [10.9, 10.95, 11.0, 11.05, 11.1]),  # 1.9% slower too, tight: overlaps, n.s.
            _startup_cell("zfs", [11.7, 11.8, 11.9, 12.0, 12.1]),  # 10% slower: past the threshold
        ]
    }
    v = verdict(doc, ["overlay2", "btrfs", "vfs", "zfs"])
    row = cells(v, "startup")
    assert row["overlay2"].best and not row["overlay2"].tied  # type: ignore[attr-defined]
    assert row["btrfs"].best and row["btrfs"].tied and row["btrfs"].text == "11 ms (tied, 1x)"  # type: ignore[attr-defined]
    assert row["vfs"].tied and not row["zfs"].best and not row["zfs"].tied  # type: ignore[attr-defined]
    advice = next(a for a in v.advice if a.startswith("To start containers fast"))
    assert advice.startswith("To start containers fast: overlay2, 10.8 ms, or ")
    assert "(a tie: under 10% apart, and not significant in this run)" in advice and "zfs 1.1x" in advice


def test_a_small_difference_the_samples_establish_is_no_tie() -> None:
    doc = {
        "cells": [
            _startup_cell("overlay2", [10.0, 10.1, 10.2, 10.3, 10.4]),
            _startup_cell("btrfs", [10.5, 10.6, 10.7, 10.8, 10.9]),  # 4.9% slower, every sample above: significant
        ]
    }
    row = cells(verdict(doc, ["overlay2", "btrfs"]), "startup")
    assert row["overlay2"].best and not row["btrfs"].best and row["btrfs"].text == "10.7 ms (1x)"  # type: ignore[attr-defined]


def test_the_reference_default_run_ties_its_cold_start_and_keeps_its_clear_rows() -> None:
    v = verdict(results.read(REFERENCE / "20261205T084929Z_default-a.json"), ["overlay2", "vfs", "btrfs"])
    cold, warm = cells(v, "cold_start"), cells(v, "warm_start")
    # overlay2 94.9 ms, btrfs 95.9 ms: five samples each, interleaved
    assert cold["overlay2"].best and cold["btrfs"].tied  # type: ignore[attr-defined]
    assert not warm["vfs"].best and not warm["btrfs"].best  # type: ignore[attr-defined]  # 14%, 13% slower
    assert "overlay2, 94.9 ms, or btrfs, 95.9 ms (a tie" in verdict_text(v)


def test_a_driver_tied_for_best_but_to_be_avoided_is_said_tied_and_not_advised() -> None:
    """vfs ties the cold start here (98.9 ms against btrfs 91.2 ms, samples overlapping) but is 62x slower to
    start and 3,600x larger per container: the advice names it tied and not advised, never as a choice."""
    v = verdict(results.read(REFERENCE / "20261205T171149Z_s3-default-b.json"), ["btrfs", "overlay2", "vfs"])
    assert cells(v, "cold_start")["vfs"].tied  # type: ignore[attr-defined]
    advice = next(a for a in v.advice if a.startswith("To start an application's container cold"))
    assert "or overlay2, 97.2 ms (a tie" in advice and advice.endswith("; vfs 1.1x (tied, not advised).")
