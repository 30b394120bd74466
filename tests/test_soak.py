"""Issue 19's guard: a short soak of undisturbed fits, the Active Memory Manager every 100 ms
(Dask's default is 2 s), loses no worker and recovers nothing."""

from __future__ import annotations

import json

import pytest

from dask_sgd.benchmarks import soak
from dask_sgd.engine.strategies import STRATEGIES


@pytest.mark.timeout(120)
def test_a_short_soak_loses_no_worker_and_recovers_nothing(tmp_path):
    out = tmp_path / "soak.json"
    (run,) = soak.main(["--quick", "--amm-interval", "100ms", "--json", str(out)])
    assert run.fits >= len(STRATEGIES), run  # every strategy at least once
    assert run.clean, run  # no death, recovery, move, failed fit or error line
    assert json.loads(out.read_text())[0]["clean"] is True
