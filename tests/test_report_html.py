"""The HTML report: self-contained and offline (plotly.js inlined once), interactive Plotly figures of the
report's own figures, a table of contents with an anchor per scenario, and the warnings of one rule."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from layerbench import report
from layerbench.report import table
from layerbench.report.plots import figures

DATA = Path(__file__).parent / "data"
RUNS = [DATA / f"{name}.json" for name in ("copy-up", "null", "layer-sharing", "startup")]


def build(paths: list[Path], baseline: str = "overlay2") -> report.Report:
    return report.build(report.read_all(paths), baseline, with_claims=False)


def _plot_calls(page: str) -> dict[str, dict[str, object]]:
    """Each figure's div id -> its data and layout, as the page hands them to Plotly.newPlot."""
    out = {}
    decoder = json.JSONDecoder()
    for m in re.finditer(r'Plotly\.newPlot\(\s*"(plot\d+)",\s*', page):
        data, end = decoder.raw_decode(page, m.end())
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        out[m.group(1)] = {"data": data, "layout": layout}
    return out


def test_html_is_self_contained_with_plotly_inlined_once() -> None:
    r = build(RUNS)
    page = report.render(r, "html")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<link|@import|<img|<iframe|\ssrc=", page), "the page must load nothing from outside"
    scripts = re.findall(r"<script[^>]*>", page)
    assert all("src" not in s for s in scripts)
    assert page.count("plotly.js v") == 1  # the library's banner: inlined once, not per figure
    calls = _plot_calls(page)
    assert len(calls) == len(figures(r)) == page.count("<figure") == page.count('class="plotly-graph-div"')


def test_plots_are_the_reports_medians_with_hover_and_legend() -> None:
    r = build(RUNS)
    (plot,) = [p for p in figures(r) if p.title.startswith("Copy-up: time of the first write to an image file")]
    lines = [t for t in plot.figure.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["overlay2", "btrfs", "null"]  # the baseline first, one toggleable entry each
    overlay2 = {
        row.params: row.median
        for row in r.rows
        if (row.scenario, row.driver, row.metric) == ("copy-up", "overlay2", "copy_up_ns")
    }
    assert plot.figure.layout.yaxis.title.text == "copy-up time, median (ms)"  # one unit: the largest median's
    assert list(lines[0].y) == [overlay2[f"file_size={x:.0f}"] / 1e6 for x in lines[0].x]
    assert "median: %{y:.3g} ms" in lines[0].hovertemplate and "95% CI" in lines[0].hovertemplate
    assert list(plot.figure.layout.xaxis.ticktext) == ["4 KiB", "1 MiB"]  # sizes as people write them
    bands = [t for t in plot.figure.data if t.fill == "toself"]
    assert [b.legendgroup for b in bands] == [t.legendgroup for t in lines]  # a band hides with its line
    assert len({t.marker.symbol for t in lines}) == 3  # markers differ, so lines that coincide stay visible


def test_titles_of_every_plot_and_box_plots_only_where_samples_vary() -> None:
    r = build(RUNS)
    titles = [p.title for p in figures(r)]
    assert titles[:3] == [
        "Copy-up: time of the first write to an image file, by file size (copy-up)",
        "Disk used by N containers of one image (layer-sharing)",
        "Container startup, by the image's layer count (startup)",
    ]
    assert "copy_up_ns (copy-up)" in titles
    disk = [r.samples("layer-sharing", d, p, "disk_bytes") for d in r.drivers for p in ("containers=1", "containers=4")]
    assert all(min(x) == max(x) for x in disk if x) and "disk_bytes (layer-sharing)" not in titles
    assert "startup_ns (startup)" in titles and "image_disk_bytes (copy-up)" not in titles  # one sample only
    assert [p.title for p in figures(build([DATA / "startup.json"]))] == [
        "Container startup, by the image's layer count (startup)",
        "startup_ns (startup)",
    ]  # the rest just omitted


def test_table_of_contents_links_an_anchor_per_scenario() -> None:
    r = build(RUNS)
    page = report.render(r, "html")
    toc = re.search(r'<nav class="toc">(.*?)</nav>', page)
    assert toc is not None
    targets = re.findall(r'href="#([^"]+)"', toc.group(1))
    assert [t for t in targets if t.startswith("s-")] == ["s-copy-up", "s-layer-sharing", "s-startup"]
    for target in targets:
        assert f'id="{target}"' in page  # every link lands somewhere
    assert page.index('id="verdict"') < page.index('id="s-copy-up"')  # the verdict before the detail


def test_warnings_are_the_end_of_run_ones_grouped_with_human_parameters() -> None:
    docs = report.read_all([DATA / "copy-up.json"])
    noisy = copy.deepcopy(docs[0])
    cell = next(c for c in noisy["cells"] if c["driver"] == "overlay2" and c["params"] == {"file_size": 1048576})
    cell["metrics"]["copy_up_ns"]["samples"] = [1e6, 4e6, 0.5e6, 3e6, 1.2e6, 0.9e6, 2.5e6]  # no settled median
    cell["metrics"]["second_write_ns"]["samples"] = [1e4, 5e4, 0.4e4, 3e4, 1e4, 0.8e4, 2e4]
    r = report.build([noisy], with_claims=False)
    assert r.warnings == table.run_warnings(r.doc)
    (line,) = [w for w in r.warnings if "overlay2" in w]
    # one line for the cell, each interval as it is (2 ms: 0.9 to 3 ms is not a symmetric ±)
    assert line.startswith("copy-up overlay2 on ext4 (file_size=1 MiB): copy_up_ns 1.2 ms, 95% CI 900 µs to 3 ms")
    assert "; second_write_ns 10 µs, 95% CI" in line and "--warmup" not in line and "±" not in line
    page = report.render(r, "html")
    assert 'id="warnings"' in page and "file_size=1 MiB" in page.split('id="warnings"')[1]


def test_a_baseline_driver_name_carrying_html_is_escaped(tmp_path: Path) -> None:
    """Issue 20: a driver name is untrusted (a results file's, given again as --baseline); the intro
    inserted the baseline unescaped, so `<script>` in a driver name ran in the browser."""
    from layerbench.analysis import results

    evil = "<script>alert(1)</script>"
    doc = results.read(DATA / "copy-up.json")
    for cell in doc["cells"]:
        if cell["driver"] == "btrfs":
            cell["driver"] = evil
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(doc))
    r = report.build(report.read_all([path]), evil, with_claims=False)
    page = report.render(r, "html")
    assert evil not in page
    assert "median over <b>&lt;script&gt;alert(1)&lt;/script&gt;</b>" in page
