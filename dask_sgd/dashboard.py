"""A page on the Dask dashboard, ``/dask-sgd``: the fits on the cluster, live.

The trainer publishes one record per segment (every few seconds) as a Dask structured event
(``Client.log_event``, topic ``dask-sgd``): the training loss, the number of workers
training, rows per second of each worker, the staleness of asynchronous pushes and each
parameter-server shard's push count. A scheduler plugin, registered by the first fit on a
cluster, serves the page and the records
(``/dask-sgd/metrics.json``) from the scheduler's own web server, the one that serves the
dashboard. The page draws the latest fit's records and refreshes every second; it needs no
JavaScript library.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from distributed import SchedulerPlugin
from tornado import web

logger = logging.getLogger(__name__)

TOPIC = "dask-sgd"
ROUTE = "/dask-sgd"


class DashboardPage(SchedulerPlugin):
    """Adds ``/dask-sgd`` and ``/dask-sgd/metrics.json`` to the scheduler's web server."""

    name = "dask-sgd-dashboard"
    idempotent = True

    async def start(self, scheduler: Any) -> None:
        application = getattr(scheduler, "http_application", None)
        if application is None:  # a scheduler without a web server
            return
        application.add_handlers(
            r".*",
            [
                (ROUTE + r"/?", PageHandler),
                (ROUTE + r"/metrics\.json", MetricsHandler, {"scheduler": scheduler}),
            ],
        )


class PageHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(PAGE)


class MetricsHandler(web.RequestHandler):
    """The latest fit's records, oldest first: ``{"fit": id, "records": [...]}``."""

    def initialize(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(latest_fit(self.scheduler.get_events(TOPIC))))


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


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dask_sgd</title>
<style>
 body { font-family: sans-serif; margin: 16px; color: #222; }
 h1 { font-size: 20px; margin: 0 0 4px; }
 #status { color: #555; margin-bottom: 12px; }
 .grid { display: grid; grid-template-columns: repeat(2, 560px); gap: 16px; }
 .chart h2 { font-size: 15px; margin: 0 0 4px; }
 svg { background: #fafafa; border: 1px solid #ddd; }
 .axis { font-size: 11px; fill: #555; }
</style></head>
<body>
<h1>dask_sgd</h1>
<div id="status">waiting for a fit on this cluster…</div>
<div class="grid">
 <div class="chart"><h2>training loss</h2><svg id="loss" width="560" height="260"></svg></div>
 <div class="chart"><h2>rows per second, per worker</h2>
  <svg id="rates" width="560" height="260"></svg></div>
 <div class="chart"><h2>staleness of pushes (mean)</h2>
  <svg id="staleness" width="560" height="260"></svg></div>
 <div class="chart"><h2>pushes per parameter-server shard</h2>
  <svg id="pushes" width="560" height="260"></svg></div>
</div>
<script>
const NS = "http://www.w3.org/2000/svg", PAD = 48, COLORS = ["#1f77b4", "#ff7f0e",
  "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  parent.appendChild(node); return node;
}
function frame(svg, ymax, label) {
  svg.innerHTML = "";
  const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
  el("line", {x1: PAD, y1: h - PAD / 2, x2: w - 8, y2: h - PAD / 2, stroke: "#999"}, svg);
  el("line", {x1: PAD, y1: 8, x2: PAD, y2: h - PAD / 2, stroke: "#999"}, svg);
  const t = el("text", {x: 4, y: 16, class: "axis"}, svg); t.textContent = ymax.toPrecision(3);
  const b = el("text", {x: w - 140, y: h - 6, class: "axis"}, svg); b.textContent = label;
  return [w, h];
}
function lines(svg, series, label) {  // series: {name: [[x, y], ...]}
  const points = Object.values(series).flat();
  if (!points.length) { frame(svg, 0, "no data"); return; }
  const xmax = Math.max(...points.map(p => p[0]), 1e-9);
  const ymax = Math.max(...points.map(p => p[1]), 1e-9);
  const [w, h] = frame(svg, ymax, label);
  Object.entries(series).forEach(([name, pts], i) => {
    const d = pts.map(([x, y], j) => (j ? "L" : "M") +
      (PAD + (w - PAD - 8) * x / xmax).toFixed(1) + "," +
      (h - PAD / 2 - (h - PAD / 2 - 8) * y / ymax).toFixed(1)).join(" ");
    el("path", {d: d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2,
                class: "series"}, svg);
    const key = el("text", {x: PAD + 64, y: 20 + 14 * i, class: "axis",
                            fill: COLORS[i % COLORS.length]}, svg);
    key.textContent = name;
  });
}
function bars(svg, values, label) {
  if (!values.length) { frame(svg, 0, "no data"); return; }
  const ymax = Math.max(...values, 1e-9), [w, h] = frame(svg, ymax, label);
  const width = (w - PAD - 8) / values.length;
  values.forEach((v, i) => {
    const height = (h - PAD / 2 - 8) * v / ymax;
    el("rect", {x: PAD + i * width + 4, y: h - PAD / 2 - height, width: width - 8,
                height: height, fill: COLORS[i % COLORS.length], class: "series"}, svg);
    const t = el("text", {x: PAD + i * width + 6, y: h - PAD / 2 + 14, class: "axis"}, svg);
    t.textContent = "shard " + i + ": " + v;
  });
}
async function refresh() {
  try {
    const url = location.pathname.replace(/\/?$/, "/") + "metrics.json";
    const answer = await (await fetch(url, {cache: "no-store"})).json();
    const records = answer.records;
    if (!records.length) return;
    const t0 = records[0].time, last = records[records.length - 1];
    document.getElementById("status").textContent =
      `fit ${answer.fit}: strategy ${last.strategy}, ${last.workers} workers, ` +
      `step ${last.step}, ` +
      `${records.length} segments, ${(last.time - t0).toFixed(1)} s`;
    lines(document.getElementById("loss"),
          {loss: records.map(r => [r.time - t0, r.loss])}, "seconds since the start");
    const rates = {};
    records.forEach(r => Object.entries(r.rows_per_second).forEach(([worker, rate]) =>
      (rates[worker] = rates[worker] || []).push([r.time - t0, rate])));
    lines(document.getElementById("rates"), rates, "seconds since the start");
    lines(document.getElementById("staleness"),
          {staleness: records.filter(r => r.staleness_mean !== undefined)
                             .map(r => [r.time - t0, r.staleness_mean])},
          last.staleness_mean === undefined ? "synchronous: none" : "seconds since the start");
    bars(document.getElementById("pushes"), last.pushes, "");
  } catch (error) {
    document.getElementById("status").textContent = "cannot read metrics: " + error;
  }
}
refresh(); setInterval(refresh, 1000);
</script>
</body></html>
"""
