"""A fleet run's hosts side by side: claims per host, a verdict per host, the Across hosts spread,
the console table, load()/CSV and compare, from a real two-host `--cluster --quick` run (trimmed)."""

from __future__ import annotations

import copy
import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from layerbench.analysis import claims, compare, results
from layerbench.analysis.results_model import run_document
from layerbench.cli.run import failure_summary
from layerbench.report import build, render
from layerbench.report.table import comparison_table, run_summary
from layerbench.units import human

FLEET = Path(__file__).parent / "data" / "fleet-2hosts.json"
HOSTS = {"lb-h8-a", "lb-h8-b"}
COPY_UP = "A change copies the file up"


@pytest.fixture
def doc() -> dict[str, Any]:
    return results.read(FLEET)


def _median(doc: dict[str, Any], host: str, **key: Any) -> float:
    (cell,) = [
        c
        for c in doc["cells"]
        if c["host"] == host
        and all(c[k] == v for k, v in key.items() if k != "params")
        and all(c["params"][k] == v for k, v in key.get("params", {}).items())
    ]
    return float(statistics.median(cell["metrics"]["copy_up_ns"]["samples"]))


def test_the_fleet_file_is_a_valid_two_host_document(doc: dict[str, Any]) -> None:
    results.validate(doc, FLEET)
    assert set(doc["hosts"]) == HOSTS == {c["host"] for c in doc["cells"]}


def test_claims_are_decided_per_host_and_said_once_where_the_hosts_agree(doc: dict[str, Any]) -> None:
    rows = claims.evaluate(doc)
    copy_up = [r for r in rows if r["claim"].startswith(COPY_UP)]
    assert {r["host"] for r in copy_up} == HOSTS  # the copy-up timings differ between the hosts
    assert copy_up[0]["figures"] != copy_up[1]["figures"]
    sharing = [r for r in rows if r["claim"].startswith("Containers from one image share its layers")]
    assert [r["host"] for r in sharing] == [""]  # disk bytes are the same on both: said once
    assert sharing[0]["verdict"] == claims.HELD
    text = claims.claims_text(doc)
    assert f"(on lb-h8-a) {COPY_UP}" in text and f"(on lb-h8-b) {COPY_UP}" in text
    # each host's figures are that host's own medians
    for host in HOSTS:
        small = _median(doc, host, scenario="copy-up", driver="overlay2", params={"file_size": 4096})
        (row,) = [r for r in copy_up if r["host"] == host]
        assert f"vs {human(small, 'ns')} at 4 KiB" in row["figures"]


def test_the_markdown_report_has_a_verdict_per_host_and_the_spread_across_hosts(doc: dict[str, Any]) -> None:
    report = build([doc])
    assert [h for h, _ in report.verdicts] == sorted(HOSTS)
    md = render(report, "md")
    assert md.index("### Verdict on lb-h8-a") < md.index("### Verdict on lb-h8-b") < md.index("## Claims")
    assert "| claim | host | verdict | figures |" in md
    assert "overlay2 @ lb-h8-a | overlay2 @ lb-h8-b | vfs @ lb-h8-a | vfs @ lb-h8-b" in md
    assert md.count("Across hosts:") == 3  # one per scenario
    lows_highs = sorted(
        _median(doc, h, scenario="copy-up", driver="overlay2", params={"file_size": 4096}) for h in HOSTS
    )
    spread = f"{human(lows_highs[0], 'ns')} – {human(lows_highs[1], 'ns')} (×{lows_highs[1] / lows_highs[0]:.3g})"
    (line,) = [
        x for x in md.splitlines() if x.startswith("| depth=1, file_size=4 KiB") and "copy_up_ns" in x and "–" in x
    ]
    assert spread in line
    page = render(report, "html")
    assert "Verdict on lb-h8-a" in page and "Verdict on lb-h8-b" in page and "Across hosts" in page
    verdicts = json.loads(render(report, "json"))["verdicts"]
    assert [v["host"] for v in verdicts] == sorted(HOSTS) and all(v["rows"] for v in verdicts)


def test_one_host_keeps_the_plain_report(doc: dict[str, Any]) -> None:
    one = {**doc, "cells": [c for c in doc["cells"] if c["host"] == "lb-h8-a"]}
    md = render(build([one]), "md")
    assert "@ lb-h8-a" not in md and "Across hosts" not in md and "Verdict on" not in md
    assert all(not r["host"] for r in claims.evaluate(one))


def test_load_and_csv_have_a_host_column_with_both_hosts(doc: dict[str, Any]) -> None:
    frame = results.load(FLEET)
    assert set(frame.host) == HOSTS
    assert len(frame) == len(frame.drop_duplicates(["host", "scenario", "driver", "backing", "params", "metric"]))
    rows = list(csv.DictReader(io.StringIO(results.to_csv(doc))))
    assert {r["host"] for r in rows} == HOSTS


def test_the_console_table_and_the_end_of_a_run_name_the_hosts(doc: dict[str, Any]) -> None:
    table = comparison_table(doc)
    assert "overlay2 @ lb-h8-a" in table and "vfs @ lb-h8-b" in table
    summary = run_summary(doc, FLEET)
    assert "== verdict on lb-h8-a" in summary and "== verdict on lb-h8-b" in summary
    failed = copy.deepcopy([c for c in doc["cells"] if c["scenario"] == "startup"][:1])
    failed[0].update(status="error", error="boom")
    assert f"@ {failed[0]['host']}" in failure_summary(failed, len(doc["cells"]), several_hosts=True)
    assert "@" not in failure_summary(failed, len(doc["cells"]))


def test_compare_pairs_every_cell_on_its_own_host(doc: dict[str, Any]) -> None:
    changes, notes = compare.compare(doc, copy.deepcopy(doc))
    assert not notes and {c.verdict for c in changes} == {"unchanged"}
    paired = {(c.scenario, c.driver, c.backing, c.params, c.host) for c in changes}
    assert paired == {c.key for c in run_document(doc).cells} and len(paired) == len(doc["cells"])
    assert {c.host for c in changes} == HOSTS
    moved = copy.deepcopy(doc)  # host a's cells under another name pair with nothing
    for c in moved["cells"]:
        if c["host"] == "lb-h8-a":
            c["host"] = "lb-h8-c"
    changes, notes = compare.compare(doc, moved)
    assert {c.host for c in changes} == {"lb-h8-b"}
    assert any("only in the old run" in n and "lb-h8-a" in n for n in notes)


def test_a_local_run_beside_a_fleet_run_is_one_more_host(doc: dict[str, Any]) -> None:
    fleet = {**doc, "cells": [c for c in doc["cells"] if c["host"] == "lb-h8-b"]}
    local = {**doc, "label": "local", "cells": []}
    del local["hosts"]
    for c in doc["cells"]:
        if c["host"] == "lb-h8-a":
            local["cells"].append({k: v for k, v in c.items() if k != "host"})
    report = build([fleet, local])
    assert report.hosts == ["lb-h8-b", doc["machine"]["name"]] and not report.notes  # nothing replaced
    assert f"overlay2 @ {doc['machine']['name']}" in render(report, "md")


def test_the_terminal_verdict_has_one_driver_order_on_every_host() -> None:
    doc = results.read(FLEET)
    firsts = {h: next(c["driver"] for c in doc["cells"] if c["host"] == h) for h in doc["hosts"]}
    assert len(set(firsts.values())) == 2  # the hosts' cells come in different driver orders
    text = run_summary(doc, Path("fleet.json"))
    headers = [lines.splitlines()[1] for lines in text.split("== verdict on ")[1:]]
    assert len(headers) == 2 and headers[0] == headers[1], headers
    assert headers[0].index("vfs") < headers[0].index("overlay2")  # the run's order (its settings)


def test_the_reports_machine_table_describes_each_host() -> None:
    doc = results.read(FLEET)
    a, b = sorted(doc["hosts"])
    doc["hosts"][a]["machine"] = {**doc["hosts"][a]["machine"], "kernel": "6.1.0-a", "disk": "ext4 on vda (virtio_blk)"}
    doc["hosts"][b]["machine"] = {**doc["hosts"][b]["machine"], "kernel": "6.6.0-b", "disk": "xfs on nvme0n1 (Samsung)"}
    doc["hosts"][b]["helpers"] = {**doc["hosts"][b]["helpers"], "mkfs.xfs": "mkfs.xfs version 6.6.0"}
    report = build([doc])
    md = render(report, "md")
    table = md[md.index("## Machine and versions") :]
    header = next(line for line in table.splitlines() if line.startswith("|  |") or line.startswith("| |"))
    assert f"{doc['label']} @ {a}" in header and f"{doc['label']} @ {b}" in header
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("|")}
    assert "6.1.0-a" in rows["kernel"] and "6.6.0-b" in rows["kernel"]
    assert rows["kernel"].index("6.1.0-a") < rows["kernel"].index("6.6.0-b")  # each under its host's column
    assert "ext4 on vda (virtio_blk)" in rows["disk"] and "xfs on nvme0n1 (Samsung)" in rows["disk"]
    assert "mkfs.xfs version 6.6.0" in rows["mkfs.xfs"] and "mkfs.xfs version 6.1.0" in rows["mkfs.xfs"]
    html = render(report, "html")
    machine = html[html.index('id="machine"') :]
    for text in ("6.1.0-a", "6.6.0-b", "xfs on nvme0n1 (Samsung)", f"{doc['label']} @ {b}"):
        assert text in machine, text
