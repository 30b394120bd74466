"""The ``/dask-sgd`` page's Bokeh document, made as Dask makes its own dashboard pages.

Every second the page reads the trainer's records from the scheduler's event log and, when
they changed, redraws the latest fit's: its training loss (a log axis), rows per second of
each worker, the mean staleness of pushes, and the pushes each parameter-server shard
applied. Every chart has axes, a legend and values on hover.
"""

from __future__ import annotations

from typing import Any

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, FactorRange, HoverTool, NumeralTickFormatter
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from distributed.dashboard.components import DashboardComponent, add_periodic_callback
from distributed.dashboard.components.scheduler import BOKEH_THEME, env
from distributed.utils import log_errors

from dask_sgd.dashboard import TOPIC

TOOLS = "pan,wheel_zoom,box_zoom,reset"
SECONDS = "seconds since the fit started"

#: a series' points: (seconds since the fit started, value, step)
Points = list[tuple[float, float, int]]


def latest_fit(events) -> dict:
    """The records of the fit that published last, from ``(timestamp, record)`` events.

    Examples
    --------
    >>> latest_fit([(1.0, {"fit": "a", "loss": 2.0}), (2.0, {"fit": "b", "loss": 1.0})])
    {'fit': 'b', 'records': [{'fit': 'b', 'loss': 1.0}]}
    """
    records = [record for _, record in events if isinstance(record, dict)]
    if not records:
        return {"fit": None, "records": []}
    fit = records[-1].get("fit")
    return {"fit": fit, "records": [r for r in records if r.get("fit") == fit]}


class TimeSeries:
    """Lines over the seconds since the fit started, one per named series, each in its
    legend's colour, with the records' values on hover."""

    def __init__(self, title: str, unit: str, y_axis_type: str = "linear", fmt: str = "0.[00]a"):
        self.lines = ColumnDataSource({"xs": [], "ys": [], "name": [], "color": []})
        self.points = ColumnDataSource(
            {"seconds": [], "value": [], "step": [], "name": [], "color": []}
        )
        self.root = figure(
            title=title, y_axis_type=y_axis_type, x_axis_label=SECONDS, y_axis_label=unit,
            height=300, sizing_mode="stretch_width", tools=TOOLS,
        )  # fmt: skip
        self.root.multi_line(
            "xs", "ys", line_color="color", line_width=2, legend_field="name", source=self.lines
        )
        dots = self.root.scatter("seconds", "value", color="color", size=5, source=self.points)
        tooltips = [
            ("", "@name"), (unit, f"@value{{{fmt}}}"), ("seconds", "@seconds{0.0}"),
            ("step", "@step"),
        ]  # fmt: skip
        self.root.add_tools(HoverTool(renderers=[dots], tooltips=tooltips))
        self.root.legend.location = "top_left"
        if y_axis_type == "linear":
            self.root.yaxis.formatter = NumeralTickFormatter(format=fmt)

    def update(self, series: dict[str, Points]) -> None:
        colors = {name: Category10_10[i % 10] for i, name in enumerate(series)}
        self.lines.data = {
            "xs": [[p[0] for p in points] for points in series.values()],
            "ys": [[p[1] for p in points] for points in series.values()],
            "name": list(series),
            "color": list(colors.values()),
        }
        flat = [(name, *point) for name, points in series.items() for point in points]
        self.points.data = {
            "seconds": [p[1] for p in flat],
            "value": [p[2] for p in flat],
            "step": [p[3] for p in flat],
            "name": [p[0] for p in flat],
            "color": [colors[p[0]] for p in flat],
        }


class ShardPushes:
    """One bar per parameter-server shard: the pushes it applied in the fit so far."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"shard": [], "pushes": [], "color": []})
        self.root = figure(
            title="Pushes per parameter-server shard", x_range=FactorRange(),
            x_axis_label="shard", y_axis_label="pushes", height=300,
            sizing_mode="stretch_width", tools=TOOLS,
        )  # fmt: skip
        self.root.vbar(x="shard", top="pushes", width=0.8, color="color", source=self.source)
        self.root.add_tools(HoverTool(tooltips=[("shard", "@shard"), ("pushes", "@pushes")]))
        self.root.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")

    def update(self, pushes: list[int]) -> None:
        shards = [str(i) for i in range(len(pushes))]
        self.root.x_range.factors = shards
        colors = [Category10_10[i % 10] for i in range(len(pushes))]
        self.source.data = {"shard": shards, "pushes": list(pushes), "color": colors}


class FitPage(DashboardComponent):
    """The latest fit's records, read from the scheduler's events and drawn."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.shown: tuple = (None, 0)  # the fit and the number of records drawn
        self.status = Div(text="Waiting for a fit on this cluster…", name="status")
        self.loss = TimeSeries("Training loss", "loss", y_axis_type="log", fmt="0.[0000]")
        self.rates = TimeSeries("Rows per second, per worker", "rows per second")
        self.staleness = TimeSeries(
            "Staleness of pushes (mean; none when synchronous)", "steps", fmt="0.[00]"
        )
        self.pushes = ShardPushes()
        self.root = column(
            self.status,
            row(self.loss.root, self.rates.root, sizing_mode="stretch_width"),
            row(self.staleness.root, self.pushes.root, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    @log_errors
    def update(self) -> None:
        latest = latest_fit(self.scheduler.get_events(TOPIC))
        records = latest["records"]
        if not records or (latest["fit"], len(records)) == self.shown:
            return
        self.shown = (latest["fit"], len(records))
        t0, last = records[0]["time"], records[-1]

        def points(field: str) -> Points:
            return [(r["time"] - t0, r[field], r["step"]) for r in records if field in r]

        rates: dict[str, Points] = {}
        for r in records:
            for worker, rate in r["rows_per_second"].items():
                rates.setdefault(worker, []).append((r["time"] - t0, rate, r["step"]))
        # a log axis cannot show a zero loss
        self.loss.update({"training loss": [p for p in points("loss") if p[1] > 0]})
        self.rates.update(dict(sorted(rates.items())))
        self.staleness.update({"mean staleness": points("staleness_mean")})
        self.pushes.update(last["pushes"])
        # the status line last: a browser that shows it has the charts' data already
        self.status.text = (
            f"<b>fit {latest['fit']}</b>: strategy {last['strategy']}, {last['workers']} "
            f"workers, step {last['step']}, {len(records)} segments, {last['time'] - t0:.1f} s"
        )


@log_errors
def page_doc(scheduler: Any, extra: dict, doc: Any) -> None:
    """Build one browser session's document (Dask's ``*_doc`` functions' signature)."""
    page = FitPage(scheduler)
    page.update()
    add_periodic_callback(doc, page, 1000)
    doc.add_root(page.root)
    doc.title = "Dask: dask_sgd"
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME
