"""``--busy-cores`` (``make test-loaded``): the suite runs beside one spinning process per
core, as on a loaded machine; without it, nothing else runs."""

from __future__ import annotations

import os
import time

import psutil
import pytest

pytestmark = pytest.mark.in_process


@pytest.mark.timeout(30)
def test_busy_cores_spin_one_process_per_core_only_when_asked(request, busy_cores):
    asked = request.config.getoption("--busy-cores")
    first_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0"
    assert len(busy_cores) == (os.cpu_count() if asked and first_worker else 0)
    processes = [psutil.Process(spinner.pid) for spinner in busy_cores]
    for process in processes:
        process.cpu_percent(None)
    time.sleep(1.0)
    # each spinner takes about a core: more than half of one even with the tests beside it
    assert all(process.cpu_percent(None) > 50 for process in processes)
