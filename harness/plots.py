"""The report's plots (matplotlib, no display needed), as base64 PNG for a self-contained page.

Line plots follow a metric across a swept parameter, one line per driver with the
bootstrap CI of the median as a band; which ones is the table LINE_PLOTS, matched
by metric and parameter name, so a scenario that is missing just has no plot. Box
plots show every metric's raw samples per parameter set and driver.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from . import results
from .report import Report, other_params, params_key
from .table import metric_title

__all__ = ["Plot", "LINE_PLOTS", "figures", "line_plots", "box_plots"]

#: (metric, swept parameter, title, log x, log y)
LINE_PLOTS: tuple[tuple[str, str, str, bool, bool], ...] = (
    ("copy_up_ns", "file_size", "Copy-up: time of the first write to an image file, by file size", True, True),
    ("copy_up_ns", "depth", "Copy-up: time of the first write, by the depth of the file's layer", True, True),
    ("disk_bytes", "containers", "Disk used by N containers of one image", False, False),
    ("startup_ns", "layers", "Container startup, by the image's layer count", True, True),
    ("startup_ns", "files", "Container startup, by the image's file count", True, True),
)
#: how an axis names a swept parameter
PARAM_NAMES = {"file_size": "file size", "depth": "layer depth of the file", "containers": "containers",
               "layers": "layers in the image", "files": "files in the image"}
MIN_BOX_SAMPLES = 3
_SCALES = {"ns": ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1, "ns")),
           "bytes": ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "B"))}


@dataclass(frozen=True)
class Plot:
    """One figure: a title, a caption and the image as base64 PNG."""

    title: str
    caption: str
    png_base64: str
    wide: bool = False  # many parameter sets: spans the page
    scenario: str = ""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + self.png_base64


def _scale(unit: str, largest: float) -> tuple[float, str]:
    for factor, name in _SCALES.get(unit, ()):
        if largest >= factor:
            return factor, name
    return 1.0, unit


def _family_scale(report: Report, metric: str) -> tuple[float, str]:
    """One unit for every plot of a metric, from its largest median in the report."""
    medians = [r["median"] for r in report.rows if r["metric"] == metric and r["n"]]
    return _scale(results.unit_of(metric), max(medians, default=1.0))


def _tick(value: float, param: str) -> str:
    if param.endswith("size"):
        factor, name = _scale("bytes", value)
        return f"{value / factor:g} {name}"
    return f"{value:g}"


def _colors(report: Report) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    return {d: palette[i % len(palette)] for i, d in enumerate(report.drivers)}


def _png(fig: MplFigure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _stats(report: Report) -> dict[tuple[str, str, str, str, str], dict[str, Any]]:
    return {(r["scenario"], r["driver"], r["backing"], r["params"], r["metric"]): r for r in report.rows}


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _line_plot(report: Report, scenario: str, metric: str, param: str, title: str,
               logx: bool, logy: bool) -> Plot | None:
    stats = _stats(report)
    points: dict[tuple[str, str], list[tuple[float, str, dict[str, Any]]]] = {}
    for cell in report.doc["cells"]:
        if cell["scenario"] != scenario or param not in cell["params"]:
            continue
        _, driver, backing, params, _ = results.cell_key(cell)
        row = stats.get((scenario, driver, backing, params, metric))
        if row is None or row["n"] == 0:
            continue
        rest = other_params(cell["params"], param)
        points.setdefault((driver, backing), []).append((float(cell["params"][param]), rest, row))
    # A driver is one line when each x has one cell (other parameters just follow x, like
    # `samples`); else one line per combination of the other parameters.
    series = report.series()
    lines: dict[tuple[str, str, str], list[tuple[float, dict[str, Any]]]] = {}
    for key in sorted(points, key=series.index):
        unique = len({x for x, _, _ in points[key]}) == len(points[key])
        for x, rest, row in sorted(points[key], key=lambda p: (p[1], p[0])):
            lines.setdefault((*key, "" if unique else rest), []).append((x, row))
    lines = {k: pts for k, pts in lines.items() if len({x for x, _ in pts}) >= 2}
    if not lines:
        return None
    factor, unit_name = _family_scale(report, metric)
    colors = _colors(report)
    slopes = {(f["driver"], f["backing"], f["rest"]): f["text"] for f in report.slopes
              if (f["scenario"], f["metric"], f["param"]) == (scenario, metric, param) and f["fits"]}
    fig = MplFigure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    rests = list(dict.fromkeys(rest for *_, rest in lines))
    backings = list(dict.fromkeys(b for _, b, _ in lines))
    for i, ((driver, backing, rest), pts) in enumerate(lines.items()):
        pts.sort(key=lambda p: p[0])
        xs = [x for x, _ in pts]
        label = report.label(driver, backing) + (f" ({_rest_text(rest)})" if rest else "")
        fitted = slopes.get((driver, backing, rest))
        if fitted:
            label += f", {fitted}"
        color = colors[driver]
        # markers differ per line and shrink as lines are drawn, so lines that coincide stay visible
        ax.plot(xs, [r["median"] / factor for _, r in pts], marker=MARKERS[i % len(MARKERS)],
                markersize=max(9 - 1.5 * i, 4), markerfacecolor="none" if i % 2 else color, color=color,
                linestyle=styles[(rests.index(rest) + backings.index(backing)) % len(styles)],
                linewidth=2.2 if i == 0 else 1.4, label=label, zorder=3 + i)
        ax.fill_between(xs, [r["ci95_low"] / factor for _, r in pts], [r["ci95_high"] / factor for _, r in pts],
                        color=color, alpha=0.15, linewidth=0)
    if logx:
        ax.set_xscale("log")
    ticks = sorted({x for pts in lines.values() for x, _ in pts})
    ax.set_xticks(ticks, [_tick(x, param) for x in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    if logy:
        ax.set_yscale("log")
    elif unit_name != "count":
        ax.set_ylim(bottom=0)
    ax.set_xlabel(PARAM_NAMES.get(param, param.replace("_", " ")))
    ax.set_ylabel(f"{metric_title(metric)}, median ({unit_name})")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    caption = (f"Median of {len(lines)} line(s) from scenario {scenario}; the band is the 95% bootstrap "
               f"confidence interval of the median" + ("; both axes logarithmic" if logx and logy else "")
               + ("; the legend gives a slope where a straight line fits the medians (R² ≥ 0.9)." if slopes else "."))
    return Plot(title=f"{title} ({scenario})", caption=caption, png_base64=_png(fig), scenario=scenario)


def _rest_text(rest: str) -> str:
    """`file_size=67108864;mode=append` as people write it: `64 MiB, append`."""
    parts = [part.partition("=") for part in rest.split(";") if part]
    return ", ".join(_tick(float(v), k) if k.endswith("size") and v.isdigit() else f"{k} {v}" if v.isdigit() else v
                     for k, _, v in parts)


def line_plots(report: Report) -> list[Plot]:
    """Every LINE_PLOTS entry for every scenario that sweeps its parameter and has its metric."""
    out = []
    for metric, param, title, logx, logy in LINE_PLOTS:
        for scenario in dict.fromkeys(c["scenario"] for c in report.doc["cells"]):
            plot = _line_plot(report, scenario, metric, param, title, logx, logy)
            if plot is not None:
                out.append(plot)
    return out


def _group_labels(groups: list[str]) -> list[str]:
    """Each parameter set as the parameters that vary between them, one per line."""
    split = [dict(part.partition("=")[::2] for part in g.split(";") if part) for g in groups]
    varying = [k for k in dict.fromkeys(k for d in split for k in d) if len({d.get(k) for d in split}) > 1]
    return ["\n".join(f"{k}={_tick(float(d[k]), k) if k.endswith('size') else d[k]}" for k in varying if k in d)
            or (g or "-") for g, d in zip(groups, split)]


def _box_plot(report: Report, scenario: str, metric: str) -> Plot | None:
    groups = sorted(dict.fromkeys(r["params"] for r in report.rows
                                  if r["scenario"] == scenario and r["metric"] == metric), key=params_key)
    series = [s for s in report.series()
              if any(len(report.samples(scenario, s[0], p, metric, s[1])) >= MIN_BOX_SAMPLES for p in groups)]
    # a box of identical samples says nothing a table does not: draw only where samples vary
    if not any(min(x) != max(x) for d, b in series for p in groups
               if (x := report.samples(scenario, d, p, metric, b))):
        return None
    data, positions, colors_used = [], [], []
    colors = _colors(report)
    width = 0.8 / len(series)
    for g, params in enumerate(groups):
        for i, (driver, backing) in enumerate(series):
            samples = report.samples(scenario, driver, params, metric, backing)
            if samples:
                data.append(samples)
                positions.append(g + (i - (len(series) - 1) / 2) * width)
                colors_used.append(colors[driver])
    factor, unit_name = _family_scale(report, metric)
    scaled = [[v / factor for v in s] for s in data]
    wide = len(groups) > 4
    fig = MplFigure(figsize=(15 if wide else 7.5, 4.6))
    ax = fig.add_subplot()
    boxes = ax.boxplot(scaled, positions=positions, widths=width * 0.85, patch_artist=True,
                       flierprops={"marker": ".", "markersize": 4}, medianprops={"color": "black"})
    for patch, color in zip(boxes["boxes"], colors_used):
        patch.set_facecolor(color)
        patch.set_alpha(0.6)
    smallest = min(min(s) for s in scaled)
    if smallest > 0 and max(max(s) for s in scaled) / smallest > 30:
        ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), _group_labels(groups), fontsize=9)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(f"{metric_title(metric)} ({unit_name})")
    title = f"{metric_title(metric).capitalize()}: every sample ({scenario})"
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(handles=[Patch(facecolor=colors[d], alpha=0.6, label=report.label(d, b)) for d, b in series],
              frameon=False)
    caption = (f"Every sample of {metric} in scenario {scenario}, by parameter set and driver: the box spans "
               "the quartiles, the whiskers 1.5 IQR, dots are outliers (kept, not dropped).")
    return Plot(title=f"{metric} ({scenario})", caption=caption, png_base64=_png(fig), wide=wide, scenario=scenario)


def box_plots(report: Report) -> list[Plot]:
    """One box plot per scenario and metric that has at least 3 samples somewhere and samples that vary."""
    out = []
    for scenario, metric in dict.fromkeys((r["scenario"], r["metric"]) for r in report.rows):
        plot = _box_plot(report, scenario, metric)
        if plot is not None:
            out.append(plot)
    return out


def figures(report: Report) -> list[Plot]:
    """The line plots, then the box plots."""
    return line_plots(report) + box_plots(report)
