"""Shared fixtures: a real Dask cluster in this process, with a synchronous client; and, with
``--busy-cores``, a loaded machine for the whole run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from distributed import Client, LocalCluster

#: what each busy core runs: a pure-Python loop, never waiting (what another job looks like)
SPIN = "while True: pass"


def pytest_addoption(parser):
    parser.addoption(
        "--busy-cores",
        action="store_true",
        help="run the tests beside one CPU-bound process per core (`make test-loaded`): "
        "they must pass on a loaded machine",
    )


@pytest.fixture(scope="session", autouse=True)
def busy_cores(request):
    """With ``--busy-cores``, one spinning process per core from the first test to the last
    (once per run: under xdist only its first worker starts them). Yields them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if not request.config.getoption("--busy-cores") or worker != "gw0":
        yield []
        return
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(os.cpu_count() or 1)]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@pytest.fixture(scope="module")
def client():
    """Two single-threaded workers in this process (fast to start, real scheduling)."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
