"""The Dask dashboard during fits: the trainer's records, Dask's task stream on ``/status``
and the ``/dask-sgd`` page, drawn by Bokeh in a real (headless) browser.

The browser tests open a page before a fit and look at it after the fit, without reloading
it: the page must have updated itself, and nothing depends on how long the fit takes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from tornado.websocket import websocket_connect

from dask_sgd import MLPClassifier, SGDClassifier
from dask_sgd.dashboard import TOPIC, DashboardPage
from dask_sgd.datasets import make_linear_classification

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def browser() -> str | None:
    return next(filter(None, map(shutil.which, BROWSERS)), None)


needs_browser = pytest.mark.skipif(
    browser() is None,
    reason="no Chromium here (`make test` installs Debian's chromium package where apt-get "
    "can; it could not on this machine)",
)


@pytest.fixture(scope="module")
def cluster(client):
    """The dashboard's base address (it listens on every interface: use the loopback one)
    and the shared in-process cluster's client."""
    port = client.dashboard_link.rsplit(":", 1)[1].split("/")[0]
    return f"http://127.0.0.1:{port}", client


def fit(client, strategy: str = "sync", rows: int = 20_000, network: bool = False) -> dict:
    """Fit a linear model (or a network of one hidden layer) on two shards, segments of at
    most 0.3 s; the fit's records, oldest first."""
    X, y = make_linear_classification(rows, 10, chunk_rows=5_000, random_state=0)
    settings = dict(strategy=strategy, batch_size=16, max_iter=1, n_shards=2,
                    snapshot_steps=200, snapshot_seconds=0.3, random_state=0)  # fmt: skip
    if network:
        MLPClassifier((8,), tol=0.0, **settings).fit(X, y)
    else:
        SGDClassifier(tol=None, **settings).fit(X, y)
    records = [record for _, record in client.get_events(TOPIC)]
    fit_id = records[-1]["fit"]
    return {"fit": fit_id, "records": [r for r in records if r["fit"] == fit_id]}


class Chromium:
    """A headless Chromium showing one page, asked about it over the DevTools protocol."""

    def __init__(self, url: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1400,900", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()  # the DevTools protocol's own, in this thread
        self.calls = 0
        try:
            port = wait_for(lambda: devtools_port(profile))
            page = wait_for(lambda: page_target(port))
            self.socket = self.loop.run_until_complete(
                connect(page["webSocketDebuggerUrl"], max_message_size=2**26)
            )
        except BaseException:
            self.loop.close()
            self.process.kill()
            self.process.wait(timeout=30)
            raise

    def close(self) -> None:
        async def goodbye() -> None:  # on the protocol's loop: the socket writes a frame
            self.socket.close()
            await asyncio.sleep(0)

        try:
            self.loop.run_until_complete(goodbye())
        finally:
            self.loop.close()
            self.process.terminate()
            self.process.wait(timeout=30)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        self.calls += 1
        call = {"id": self.calls, "method": "Runtime.evaluate",
                "params": {"expression": expression, "returnByValue": True}}  # fmt: skip
        result = self.loop.run_until_complete(self.call(call))["result"]
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def call(self, call: dict) -> dict:
        await self.socket.write_message(json.dumps(call))
        while True:  # skip the browser's events: the answer carries the call's id
            answer = json.loads(await self.socket.read_message())
            if answer.get("id") == call["id"]:
                return answer

    def wait_for_js(self, expression: str):
        """The first true value of ``expression``; on a timeout, say what the page shows."""
        try:
            return wait_for(lambda: self.evaluate(expression))
        except AssertionError as error:
            shown = self.evaluate("document.title + ': ' + document.body.innerText.slice(0, 300)")
            raise AssertionError(f"{error}; the page shows {shown!r}") from None


async def connect(url: str, **options):
    """Tornado's websocket, its future made on the loop that runs it."""
    return await websocket_connect(url, **options)


def page_target(port: str) -> dict | None:
    """The DevTools' description of Chromium's page, once it has one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
        return next((t for t in json.load(answer) if t["type"] == "page"), None)


def devtools_port(profile: Path) -> str | None:
    """The port Chromium's DevTools listen on, once Chromium has written it."""
    try:
        return (profile / "DevToolsActivePort").read_text().split()[0]
    except (FileNotFoundError, IndexError):
        return None


def wait_for(condition, timeout: float = 60):
    """The first true value of ``condition()``, asked again until it is one (the timeout is
    there for a failure, not for a page or a fit to take its time)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        time.sleep(0.1)
    return value


@pytest.fixture
def open_page(tmp_path):
    """Open a page in a headless Chromium: ``open_page(url)``; closed after the test."""
    browsers = []

    def open_(url: str) -> Chromium:
        browsers.append(Chromium(url, tmp_path / f"profile{len(browsers)}"))
        return browsers[-1]

    yield open_
    for chromium in browsers:
        chromium.close()


#: the Bokeh document once BokehJS has drawn every root of it (null before)
DRAWN = "window.Bokeh && Bokeh.documents.length && [...Bokeh.index].every(v => v.has_finished())"

#: the task keys that Dask's task stream shows
TASK_STREAM = """[...Bokeh.documents[0].get_model_by_name("task_stream").renderers[0]
  .data_source.data.name]"""

#: what /dask-sgd shows: its status line, the menu, and each chart's title, y scale, legend
#: entries, tooltips and the points of each of its renderers
DASK_SGD_PAGE = """(() => {
  const doc = Bokeh.documents[0];
  const charts = [...doc.all_models].filter(m => m.type === "Figure").map(f => ({
    title: f.title.text,
    y_scale: f.y_scale.type,
    legend: f.center.filter(m => m.type === "Legend")
      .flatMap(l => l.items.flatMap(i => i.get_labels_list_from_label_prop())),
    tooltips: f.toolbar.tools.filter(t => t.type === "HoverTool").flatMap(t => t.tooltips),
    points: f.renderers.map(r => r.data_source.get_length()),
    pushes: f.renderers[0].data_source.data.pushes,
  }));
  return {
    title: document.title,
    status: doc.get_model_by_name("status").text,
    menu: [...document.querySelectorAll(".navbar a")].map(a => a.getAttribute("href")),
    charts: Object.fromEntries(charts.map(c => [c.title, c])),
  };
})()"""


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # one epoch
@pytest.mark.parametrize("network", [False, True], ids=["linear", "network"])
def test_each_segment_publishes_a_record_of_the_fit(cluster, network):
    _, client = cluster
    answer = fit(client, strategy="downpour", network=network)
    records = answer["records"]
    assert len(records) >= 2  # one per segment, not one per fit
    record = records[-1]
    assert record["strategy"] == "downpour" and record["loss"] > 0
    assert len(record["rows_per_second"]) == 2  # one rate per worker
    assert len(record["pushes"]) == 2 and sum(record["pushes"]) > 0
    assert record["staleness_mean"] >= 0
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps))  # in order
    assert records[0]["time"] < records[-1]["time"]
    if network:  # from Glorot's random start, slower: it learns over the segments
        assert 0 < records[-1]["loss"] < records[0]["loss"]
    else:  # from zero coefficients (log-loss ln 2 = 0.693), the first segment already learned
        assert 0 < records[0]["loss"] < 0.69


@needs_browser
def test_dasks_status_page_streams_the_fits_tasks(cluster, open_page):
    base, client = cluster
    page = open_page(f"{base}/status")
    page.wait_for_js(DRAWN)  # Bokeh drew it: Dask's "needs bokeh" page has no Bokeh
    assert page.evaluate('Bokeh.documents[0].get_model_by_name("task_stream").title.text') == (
        "Task Stream"
    )
    fit(client)
    # the open page receives the fit's tasks (its units are keyed dask-sgd-<strategy>-…)
    tasks = page.wait_for_js(f"{TASK_STREAM}.filter(name => name.startsWith('dask-sgd-'))")
    assert "dask-sgd-sync" in tasks


@needs_browser
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # one epoch
@pytest.mark.parametrize("network", [False, True], ids=["linear", "network"])
def test_the_dask_sgd_page_draws_the_latest_fit_live(cluster, open_page, network):
    base, client = cluster
    client.register_plugin(DashboardPage())  # the page before the first fit, as a fit adds it
    page = open_page(f"{base}/dask-sgd")
    page.wait_for_js(DRAWN)
    answer = fit(client, strategy="downpour", network=network)
    n, last = len(answer["records"]), answer["records"][-1]
    # the open page draws the whole fit by itself, within a second
    status = f"fit {answer['fit']}</b>: strategy downpour, 2 workers, step {last['step']}, {n} "
    page.wait_for_js(f"Bokeh.documents[0].get_model_by_name('status').text.includes({status!r})")
    page.wait_for_js(DRAWN)
    shown = page.evaluate(DASK_SGD_PAGE)
    assert shown["title"] == "Dask: dask_sgd"
    assert "dask-sgd" in shown["menu"] and "status" in shown["menu"]  # in Dask's menu
    charts = shown["charts"]
    assert set(charts) == {
        "Training loss", "Rows per second, per worker",
        "Staleness of pushes (mean; none when synchronous)", "Pushes per parameter-server shard",
    }  # fmt: skip
    loss = charts["Training loss"]
    assert loss["y_scale"] == "LogScale" and loss["legend"] == ["training loss"]
    assert loss["points"] == [1, n]  # one line, a point per segment
    rates = charts["Rows per second, per worker"]
    assert rates["legend"] == sorted(client.scheduler_info()["workers"])  # one entry a worker
    assert rates["points"] == [2, 2 * n]
    staleness = charts["Staleness of pushes (mean; none when synchronous)"]
    assert staleness["legend"] == ["mean staleness"] and staleness["points"] == [1, n]
    for chart, unit in ((loss, "loss"), (rates, "rows per second"), (staleness, "steps")):
        assert [label for label, _ in chart["tooltips"]] == ["", unit, "seconds", "step"]
    pushes = charts["Pushes per parameter-server shard"]
    assert pushes["pushes"] == last["pushes"] and sum(pushes["pushes"]) > 0
    assert [label for label, _ in pushes["tooltips"]] == ["shard", "pushes"]
