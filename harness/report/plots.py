"""The report's plots as interactive Plotly figures: hover for the figures, click a legend entry to hide a line.

Line plots follow a metric across a swept parameter, one line per driver with the
bootstrap CI of the median as a band; which ones is the table LINE_PLOTS, matched
by metric and parameter name, so a scenario that is missing just has no plot. Box
plots show every metric's raw samples per parameter set and driver. The page that
shows them inlines plotly.js once (`plotly_js`), so it stays self-contained and offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from layerbench.analysis import results
from layerbench.report.model import Report
from layerbench.report.params import other_params, params_key
from layerbench.report.rows import MetricRow
from layerbench.report.table import metric_title

__all__ = ["Plot", "LINE_PLOTS", "figures", "line_plots", "box_plots", "plotly_js"]

#: (metric, swept parameter, title, log x, log y)
LINE_PLOTS: tuple[tuple[str, str, str, bool, bool], ...] = (
    ("copy_up_ns", "file_size", "Copy-up: time of the first write to an image file, by file size", True, True),
    ("copy_up_ns", "depth", "Copy-up: time of the first write, by the depth of the file's layer", True, True),
    ("disk_bytes", "containers", "Disk used by N containers of one image", False, False),
    ("startup_ns", "layers", "Container startup, by the image's layer count", True, True),
    ("startup_ns", "files", "Container startup, by the image's file count", True, True),
)
#: how an axis names a swept parameter
PARAM_NAMES = {
    "file_size": "file size",
    "depth": "layer depth of the file",
    "containers": "containers",
    "layers": "layers in the image",
    "files": "files in the image",
}
MIN_BOX_SAMPLES = 3
_SCALES = {
    "ns": ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1, "ns")),
    "bytes": ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "B")),
}


#: the plot's toolbar: no logo, no link to the Plotly cloud; PNG export kept
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


@dataclass(frozen=True)
class Plot:
    """One figure: a title, a caption and the Plotly figure."""

    title: str
    caption: str
    figure: go.Figure
    wide: bool = False  # many parameter sets: spans the page
    scenario: str = ""

    def html(self, div_id: str) -> str:
        """The figure as a <div> and the script that draws it with the page's plotly.js (`plotly_js`)."""
        return str(
            self.figure.to_html(
                full_html=False,
                include_plotlyjs=False,
                div_id=div_id,
                config=CONFIG,
                default_width="100%",
                default_height=f"{self.figure.layout.height}px",
            )
        )


def plotly_js() -> str:
    """plotly.js itself, to inline once per page."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _scale(unit: str, largest: float) -> tuple[float, str]:
    for factor, name in _SCALES.get(unit, ()):
        if largest >= factor:
            return factor, name
    return 1.0, unit


def _family_scale(report: Report, metric: str) -> tuple[float, str]:
    """One unit for every plot of a metric, from its largest median in the report."""
    medians = [r.median for r in report.rows if r.metric == metric and r.n]
    return _scale(results.unit_of(metric), max(medians, default=1.0))


def _tick(value: float, param: str) -> str:
    if param.endswith("size"):
        factor, name = _scale("bytes", value)
        return f"{value / factor:g} {name}"
    return f"{value:g}"


def _colors(report: Report) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    return {d: palette[i % len(palette)] for i, d in enumerate(report.drivers)}


def _stats(report: Report) -> dict[tuple[str, str, str, str, str, str], MetricRow]:
    return {(*r.key, r.metric): r for r in report.rows}


MARKERS = ["circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x", "star"]


def _alpha(color: str, alpha: float) -> str:
    """`#1f77b4` -> `rgba(31,119,180,0.15)`."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _ci_text(row: MetricRow, factor: float, unit: str) -> str:
    return f"{row.ci95_low / factor:.3g} to {row.ci95_high / factor:.3g} {unit}"


def _decades(fig: go.Figure, values: list[float]) -> None:
    """On a logarithmic y axis spanning over a decade and a half, label the powers of ten only."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 30:
        fig.update_yaxes(dtick=1)


def _layout(fig: go.Figure, title: str, height: int) -> None:
    """Title, size, a legend under the plot, light grids, hover on the nearest point."""
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=height,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        hovermode="closest",
        legend={"orientation": "h", "y": -0.22, "font": {"size": 11}},
    )


#: one line of a line plot: driver, backing, host and the other parameters (`""` when they follow x)
Line = tuple[str, str, str, str]
#: a line's points: x and the report row of its cell's metric
Points = list[tuple[float, MetricRow]]
DASHES = ["solid", "dash", "dot", "dashdot"]


def _lines(report: Report, scenario: str, metric: str, param: str) -> dict[Line, Points]:
    """The lines of `metric` across `param` in `scenario`, in the report's series order; only lines with two
    x values or more."""
    stats = _stats(report)
    points: dict[tuple[str, str, str], list[tuple[float, str, MetricRow]]] = {}
    for cell in report.document.cells:
        if cell.scenario != scenario or param not in cell.params:
            continue
        row = stats.get((*cell.key, metric))
        if row is None or row.n == 0:
            continue
        rest = other_params(dict(cell.params), param)
        points.setdefault((row.driver, row.backing, row.host), []).append((float(cell.params[param]), rest, row))
    # A driver is one line when each x has one cell (other parameters just follow x, like
    # `samples`); else one line per combination of the other parameters.
    series = report.series()
    lines: dict[Line, Points] = {}
    for key in sorted(points, key=series.index):
        unique = len({x for x, _, _ in points[key]}) == len(points[key])
        for x, rest, row in sorted(points[key], key=lambda p: (p[1], p[0])):
            lines.setdefault((*key, "" if unique else rest), []).append((x, row))
    return {k: sorted(pts, key=lambda p: p[0]) for k, pts in lines.items() if len({x for x, _ in pts}) >= 2}


def _line_plot(
    report: Report, scenario: str, metric: str, param: str, title: str, logx: bool, logy: bool
) -> Plot | None:
    lines = _lines(report, scenario, metric, param)
    if not lines:
        return None
    factor, unit_name = _family_scale(report, metric)
    colors = _colors(report)
    slopes = {
        (f.driver, f.backing, f.host, f.rest): f.text
        for f in report.slopes
        if (f.scenario, f.metric, f.param) == (scenario, metric, param) and f.fits
    }
    fig = go.Figure()
    rests = list(dict.fromkeys(rest for *_, rest in lines))
    backings = list(dict.fromkeys(b for _, b, _, _ in lines))
    hosts = list(dict.fromkeys(h for _, _, h, _ in lines))
    x_name = PARAM_NAMES.get(param, param.replace("_", " "))
    for i, ((driver, backing, host, rest), pts) in enumerate(lines.items()):
        label = report.label(driver, backing, host) + (f" ({_rest_text(rest)})" if rest else "")
        fitted = slopes.get((driver, backing, host, rest))
        if fitted:
            label += f", {fitted}"
        dash = DASHES[(rests.index(rest) + backings.index(backing) + hosts.index(host)) % len(DASHES)]
        _add_line(fig, i, pts, label, colors[driver], dash, (factor, unit_name), (param, x_name))
    ticks = sorted({x for pts in lines.values() for x, _ in pts})
    fig.update_xaxes(
        type="log" if logx else "linear", tickvals=ticks, ticktext=[_tick(x, param) for x in ticks], title=x_name
    )
    fig.update_yaxes(
        type="log" if logy else "linear",
        title=f"{metric_title(metric)}, median ({unit_name})",
        rangemode="normal" if logy else "tozero",
    )
    if logy:
        _decades(fig, [v / factor for pts in lines.values() for _, r in pts for v in (r.ci95_low, r.ci95_high)])
    _layout(fig, title, 440)
    caption = (
        f"Median of {len(lines)} line(s) from scenario {scenario}; the band is the 95% bootstrap "
        f"confidence interval of the median"
        + ("; both axes logarithmic" if logx and logy else "")
        + ("; the legend gives a slope where a straight line fits the medians (R² ≥ 0.9)." if slopes else ".")
    )
    return Plot(title=f"{title} ({scenario})", caption=caption, figure=fig, scenario=scenario)


def _add_line(
    fig: go.Figure,
    i: int,
    pts: Points,
    label: str,
    color: str,
    dash: str,
    scale: tuple[float, str],
    param: tuple[str, str],
) -> None:
    """The `i`-th line: its CI band first (hidden with its line from the legend), then the medians. Markers
    differ per line and shrink as lines are drawn, so lines that coincide stay visible."""
    (factor, unit_name), (name, x_name) = scale, param
    xs, group = [x for x, _ in pts], f"line{i}"
    fig.add_trace(
        go.Scatter(
            x=xs + xs[::-1],
            y=[r.ci95_high / factor for _, r in pts] + [r.ci95_low / factor for _, r in pts][::-1],
            fill="toself",
            fillcolor=_alpha(color, 0.15),
            line={"width": 0},
            hoverinfo="skip",
            legendgroup=group,
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[r.median / factor for _, r in pts],
            name=label,
            legendgroup=group,
            mode="lines+markers",
            line={"color": color, "width": 3 if i == 0 else 2, "dash": dash},
            marker={
                "symbol": MARKERS[i % len(MARKERS)] + ("-open" if i % 2 else ""),
                "size": max(12 - 2 * i, 6),
                "line": {"width": 2, "color": color},
            },
            customdata=[[_tick(x, name), _ci_text(r, factor, unit_name), int(r.n)] for x, r in pts],
            hovertemplate=f"<b>{label}</b><br>{x_name}: %{{customdata[0]}}<br>median: %{{y:.3g}} {unit_name}"
            "<br>95% CI: %{customdata[1]}<br>%{customdata[2]} samples<extra></extra>",
        )
    )


def _rest_text(rest: str) -> str:
    """`file_size=67108864;mode=append` as people write it: `64 MiB, append`."""
    parts = [part.partition("=") for part in rest.split(";") if part]
    return ", ".join(
        _tick(float(v), k) if k.endswith("size") and v.isdigit() else f"{k} {v}" if v.isdigit() else v
        for k, _, v in parts
    )


def line_plots(report: Report) -> list[Plot]:
    """Every LINE_PLOTS entry for every scenario that sweeps its parameter and has its metric."""
    out = []
    for metric, param, title, logx, logy in LINE_PLOTS:
        for scenario in dict.fromkeys(c.scenario for c in report.document.cells):
            plot = _line_plot(report, scenario, metric, param, title, logx, logy)
            if plot is not None:
                out.append(plot)
    return out


def _group_labels(groups: list[str]) -> list[str]:
    """Each parameter set as the parameters that vary between them, one per line."""
    split = [dict(part.partition("=")[::2] for part in g.split(";") if part) for g in groups]
    varying = [k for k in dict.fromkeys(k for d in split for k in d) if len({d.get(k) for d in split}) > 1]
    return [
        "<br>".join(f"{k}={_tick(float(d[k]), k) if k.endswith('size') else d[k]}" for k in varying if k in d)
        or (g or "-")
        for g, d in zip(groups, split, strict=True)
    ]


def _box_plot(report: Report, scenario: str, metric: str) -> Plot | None:
    groups = sorted(
        dict.fromkeys(r.params for r in report.rows if r.scenario == scenario and r.metric == metric),
        key=params_key,
    )
    series = [
        s
        for s in report.series()
        if any(len(report.samples(scenario, s[0], p, metric, *s[1:])) >= MIN_BOX_SAMPLES for p in groups)
    ]
    # a box of identical samples says nothing a table does not: draw only where samples vary
    if not any(
        min(x) != max(x) for s in series for p in groups if (x := report.samples(scenario, s[0], p, metric, *s[1:]))
    ):
        return None
    colors = _colors(report)
    factor, unit_name = _family_scale(report, metric)
    labels = dict(zip(groups, _group_labels(groups), strict=True))
    fig = go.Figure()
    everything: list[float] = []
    for driver, backing, host in series:
        xs: list[str] = []
        ys: list[float] = []
        for params in groups:
            samples = [v / factor for v in report.samples(scenario, driver, params, metric, backing, host)]
            xs += [labels[params]] * len(samples)
            ys += samples
        everything += ys
        fig.add_trace(
            go.Box(
                x=xs,
                y=ys,
                name=report.label(driver, backing, host),
                marker={"color": colors[driver]},
                boxpoints="outliers",
            )
        )  # hover: the quartiles, fences and median in unit_name
    wide = len(groups) > 4
    smallest = min(everything)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[labels[g] for g in groups])
    fig.update_yaxes(
        type="log" if smallest > 0 and max(everything) / smallest > 30 else "linear",
        title=f"{metric_title(metric)} ({unit_name})",
    )
    if fig.layout.yaxis.type == "log":
        _decades(fig, everything)
    fig.update_layout(boxmode="group")
    title = f"{metric_title(metric).capitalize()}: every sample ({scenario})"
    _layout(fig, title, 460)
    caption = (
        f"Every sample of {metric} in scenario {scenario}, by parameter set and driver: the box spans "
        "the quartiles, the whiskers 1.5 IQR, dots are outliers (kept, not dropped)."
    )
    return Plot(title=f"{metric} ({scenario})", caption=caption, figure=fig, wide=wide, scenario=scenario)


def box_plots(report: Report) -> list[Plot]:
    """One box plot per scenario and metric that has at least 3 samples somewhere and samples that vary."""
    out = []
    for scenario, metric in dict.fromkeys((r.scenario, r.metric) for r in report.rows):
        plot = _box_plot(report, scenario, metric)
        if plot is not None:
            out.append(plot)
    return out


def figures(report: Report) -> list[Plot]:
    """The line plots, then the box plots."""
    return line_plots(report) + box_plots(report)
