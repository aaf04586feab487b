"""The engine-overhead column: an engine driver's time beside its mechanism's, in the report and the verdict."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from layerbench import report
from layerbench.analysis import results
from layerbench.report.engines import engine_overheads, mechanisms
from layerbench.report.verdict import verdict, verdict_dict, verdict_text

DEFAULT = Path(__file__).parent.parent / "results" / "reference" / "20261130T074758Z_default.json"


def _with_engine(doc: dict[str, Any], engine: str, mechanism: str, factor: int) -> dict[str, Any]:
    """`doc` plus a copy of each of `mechanism`'s cells run by `engine`, every timing `factor` times theirs."""
    out = copy.deepcopy(doc)
    for cell in doc["cells"]:
        if cell["driver"] == mechanism:
            twin = copy.deepcopy(cell)
            twin["driver"] = engine
            for name, metric in twin["metrics"].items():
                if name.endswith("_ns"):
                    metric["samples"] = [v * factor for v in metric["samples"]]
            out["cells"].append(twin)
    return out


def test_engine_drivers_name_their_mechanisms() -> None:
    assert mechanisms(["containerd/overlayfs", "containerd/native", "containerd/btrfs", "overlay2"]) == {
        "containerd/overlayfs": "containerd-overlayfs",
        "containerd/native": "vfs",
        "containerd/btrfs": "btrfs",
    }
    assert mechanisms(["podman/overlay", "podman/vfs", "podman/btrfs"]) == {
        "podman/overlay": "overlay2",
        "podman/vfs": "vfs",
        "podman/btrfs": "btrfs",
    }


def test_each_operation_pairs_with_the_mechanisms_cell_of_the_same_scenario_and_parameters() -> None:
    doc = _with_engine(results.read(DEFAULT), "podman/overlay", "overlay2", 7)
    rows = engine_overheads(doc)
    overlay2 = [c for c in doc["cells"] if c["driver"] == "overlay2" and c["status"] == "ok"]
    timed = sum(len([m for m in c["metrics"] if m.endswith("_ns") and c["metrics"][m]["samples"]]) for c in overlay2)
    assert len(rows) == timed, "one row per timed metric of every paired cell"
    for r in rows:
        assert (r.engine, r.mechanism) == ("podman/overlay", "overlay2")
        assert abs(r.engine_ns - 7 * r.mechanism_ns) <= 1e-6 * r.engine_ns + 1
        assert r.overhead_ns == r.engine_ns - r.mechanism_ns
    startup = next(r for r in rows if r.scenario == "startup" and r.metric == "startup_ns")
    assert (
        startup.text().startswith("podman/overlay startup (") and ", of which mechanism (overlay2) " in startup.text()
    )
    assert engine_overheads(results.read(DEFAULT)) == [], "no engine ran: no pairs"


def test_the_verdict_and_the_report_show_the_engine_beside_its_mechanism() -> None:
    doc = _with_engine(results.read(DEFAULT), "containerd/btrfs", "btrfs", 3)
    v = verdict(doc, ["overlay2", "btrfs", "vfs", "containerd/btrfs"])
    assert v.engine and all(line.startswith("containerd/btrfs ") for line in v.engine)
    assert any(line.startswith("containerd/btrfs commit ") for line in v.engine), v.engine
    assert "engines beside their mechanisms:" in verdict_text(v)
    assert verdict_dict(v)["engine_overhead"] == v.engine
    md = report.render(report.build([doc]), "md")
    assert md.index("## Verdict") < md.index("## Engine overhead") < md.index("## Claims")
    section = md[md.index("## Engine overhead") :]
    assert "| containerd/btrfs |" in section and "| btrfs |" in section and "engine − mechanism" in section
