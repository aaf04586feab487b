"""junit: an example layerbench exporter, each cell of a report a JUnit XML test case."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, TextIO
from xml.etree import ElementTree

from layerbench import hookimpl

if TYPE_CHECKING:
    from layerbench.plugins import ExporterRegistry
    from layerbench.report import Report

__all__ = ["write_junit", "layerbench_register_exporters"]
__version__ = "0.1.0"


def write_junit(report: Report, out: TextIO) -> None:
    """One <testsuite> per scenario, one <testcase> per cell (driver, backing, parameters); a cell whose
    status is not ok fails with its error; each metric's median (in its unit) is a <property>."""
    suites = ElementTree.Element("testsuites", name="layerbench")
    by_scenario: dict[str, ElementTree.Element] = {}
    for cell in report.doc["cells"]:
        suite = by_scenario.get(cell["scenario"])
        if suite is None:
            suite = by_scenario[cell["scenario"]] = ElementTree.SubElement(
                suites, "testsuite", name=cell["scenario"], tests="0", failures="0"
            )
        params = ";".join(f"{k}={v}" for k, v in sorted(cell["params"].items()))
        on = f" on {cell['backing']}" if cell.get("backing") else ""
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"{cell['scenario']}.{cell['driver']}",
            name=f"{cell['driver']}{on} {params}".strip(),
        )
        props = ElementTree.SubElement(case, "properties")
        for metric, data in cell.get("metrics", {}).items():
            if data["samples"]:
                ElementTree.SubElement(
                    props, "property", name=f"{metric} ({data['unit']})", value=str(statistics.median(data["samples"]))
                )
        suite.set("tests", str(int(suite.get("tests", "0")) + 1))
        if cell["status"] != "ok":
            ElementTree.SubElement(case, "failure", message=f"{cell['status']}: {cell.get('error')}")
            suite.set("failures", str(int(suite.get("failures", "0")) + 1))
    ElementTree.indent(suites)
    out.write(ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")


@hookimpl
def layerbench_register_exporters(registry: ExporterRegistry) -> None:
    registry.add("junit", write_junit, suffix=".xml", description="each cell a JUnit XML test case")
