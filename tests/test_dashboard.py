"""The /dask-sgd page on the Dask dashboard: served during a fit, drawn in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from dask_sgd import SGDClassifier
from dask_sgd.datasets import make_linear_classification

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


@pytest.fixture(scope="module")
def cluster(client):
    """The dashboard's base address (it listens on every interface: use the loopback one)
    and the shared in-process cluster's client."""
    port = client.dashboard_link.rsplit(":", 1)[1].split("/")[0]
    return f"http://127.0.0.1:{port}", client


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


class FitInBackground:
    """A downpour fit (so it has staleness) on two shards in a thread, short segments from
    the first on so that records come fast. ``earlier_fit`` is the page's fit before it."""

    def __init__(self, client, base: str, rows: int) -> None:
        X, y = make_linear_classification(rows, 10, chunk_rows=5_000, random_state=0)
        self.clf = SGDClassifier(
            strategy="downpour", batch_size=16, max_iter=1, tol=None, n_shards=2,
            snapshot_steps=200, snapshot_seconds=0.3, random_state=0,
        )  # fmt: skip
        self.thread = threading.Thread(target=lambda: self.clf.fit(X, y))
        self.client = client
        self.earlier_fit = records(base)["fit"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()


def records(base: str) -> dict:
    """The page's latest fit and its records (none before a fit has registered the page)."""
    try:
        return json.loads(fetch(f"{base}/dask-sgd/metrics.json"))
    except urllib.error.HTTPError as error:
        assert error.code == 404
        return {"fit": None, "records": []}


def wait_for_records(base: str, fit: FitInBackground, at_least: int, timeout=60) -> dict:
    """At least ``at_least`` records of ``fit`` (not of a fit of an earlier test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = records(base)
        if answer["fit"] != fit.earlier_fit and len(answer["records"]) >= at_least:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} records after {timeout} s")


@pytest.mark.timeout(120)
def test_the_page_and_the_fits_records_are_served_during_the_fit(cluster):
    base, client = cluster
    with FitInBackground(client, base, rows=40_000) as fit:
        answer = wait_for_records(base, fit, at_least=3)
        assert fit.thread.is_alive()  # live, not after the fact
    record = answer["records"][-1]
    assert record["strategy"] == "downpour" and record["loss"] > 0
    assert len(record["rows_per_second"]) == 2  # one rate per worker
    assert len(record["pushes"]) == 2 and sum(record["pushes"]) > 0
    assert record["staleness_mean"] >= 0
    page = fetch(f"{base}/dask-sgd").decode()
    assert "pushes per parameter-server shard" in page and "metrics.json" in page
    final = json.loads(fetch(f"{base}/dask-sgd/metrics.json"))
    assert final["fit"] == answer["fit"] and len(final["records"]) > len(answer["records"])
    steps = [r["step"] for r in final["records"]]
    assert steps == sorted(set(steps))  # one record per segment, in order
    # from zero coefficients (log-loss ln 2 = 0.693), the first segment already learned
    assert 0 < final["records"][0]["loss"] < 0.69


def browser() -> str | None:
    return next(filter(None, map(shutil.which, BROWSERS)), None)


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    browser() is None,
    reason="no Chromium here (`make test` installs Debian's chromium package where apt-get "
    "can; it could not on this machine)",
)
def test_a_headless_browser_draws_the_page_with_data_during_a_fit(cluster, tmp_path):
    from matplotlib.image import imread

    base, client = cluster
    command = [
        browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--window-size=1200,700", "--virtual-time-budget=5000",
    ]  # fmt: skip
    with FitInBackground(client, base, rows=60_000) as fit:
        wait_for_records(base, fit, at_least=3)
        dom = subprocess.run(
            [*command, "--dump-dom", f"{base}/dask-sgd"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        shot = tmp_path / "dashboard.png"
        subprocess.run(
            [*command, f"--screenshot={shot}", f"{base}/dask-sgd"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        assert fit.thread.is_alive()
    assert "strategy downpour" in dom
    loss_chart = dom[dom.index('id="loss"') : dom.index('id="rates"')]
    assert loss_chart.count(" L") >= 2  # a drawn line through three or more records
    assert dom.count('class="series"') >= 6  # loss, 2 worker rates, staleness, 2 shard bars
    pixels = imread(shot)[:, :, :3]
    assert pixels.shape[:2] == (700, 1200)
    colored = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2) > 0.15
    assert colored.sum() > 2000  # the plots' colored lines and bars, not a blank page
