"""The sparse defaults suite runs end to end at a small size (``--quick``)."""

from __future__ import annotations

import json
import math

import pytest

from dask_sgd import defaults
from dask_sgd.benchmarks import sparse_defaults


@pytest.mark.timeout(120)
def test_quick_run_covers_every_problem_and_candidate(tmp_path):
    """Every problem and candidate is in the JSON with finite metrics, and the default rate
    does no worse than the worst candidate: a rate far too large fails most problems."""
    candidates = sorted({defaults.DASK_SPARSE_ETA0, 2.0})
    names = ["hashed"]  # one of the seven: the suite's time is the benchmark's
    report = sparse_defaults.main(
        ["--quick", "--eta0", ",".join(map(str, candidates)), "--output", str(tmp_path),
         "--problems", *names]
    )  # fmt: skip
    saved = json.loads((tmp_path / "sparse-defaults.json").read_text())
    assert [result["problem"] for result in saved["problems"]] == names
    assert saved["candidates"] == candidates
    for result in saved["problems"]:
        assert math.isfinite(result["reference"])
        assert [entry["eta0"] for entry in result["candidates"]] == candidates
        for entry in result["candidates"]:
            assert [run["strategy"] for run in entry["runs"]] == list(sparse_defaults.STRATEGIES)
            assert all(run["finite"] for run in entry["runs"])
            assert all(math.isfinite(v) for run in entry["runs"] for v in run["by_epochs"].values())
    passed = {float(e): s["problems_passed"] for e, s in report["by_candidate"].items()}
    assert passed[defaults.DASK_SPARSE_ETA0] >= min(passed.values())
    assert passed[defaults.DASK_SPARSE_ETA0] >= passed[2.0]
    assert report["chosen"] in candidates
    table = (tmp_path / "sparse-defaults.md").read_text()
    assert table.count("(chosen)") == 1
