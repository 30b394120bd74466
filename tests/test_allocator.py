"""The allocator held steady while units train (``dask_sgd/engine/allocator.py``), in a
process started with the setting Dask's Nanny gives its workers."""

from __future__ import annotations

import json
import subprocess
import sys

import dask
import pytest

from dask_sgd.engine import allocator

pytestmark = [
    pytest.mark.in_process,
    pytest.mark.skipif(allocator._LIBC is None, reason="glibc's mallopt is not here"),
]

#: page faults of 100 arrays of 1 MiB made and freed: outside, inside, and after the block
CHURN = """
import json, resource
import numpy as np
from dask_sgd.engine.allocator import steady_allocations

def faults_of_churn():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        np.ones(2**18, np.float32).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = faults_of_churn()
with steady_allocations(), steady_allocations():  # two units in one worker
    inside = faults_of_churn()
after = faults_of_churn()
print(json.dumps([outside, inside, after]))
"""


@pytest.mark.timeout(60)
def test_freed_arrays_are_reused_while_units_train_and_dasks_setting_comes_back():
    """Under Dask's worker setting each 1 MiB array faults in its 256 pages; inside the
    block they are reused; after it, the worker's setting is back."""
    environ = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert "MALLOC_TRIM_THRESHOLD_" in environ  # what the module works around
    env = {key: str(value) for key, value in environ.items()}
    run = subprocess.run(
        [sys.executable, "-c", CHURN], env=env, capture_output=True, text=True, check=True
    )
    outside, inside, after = json.loads(run.stdout)
    pages = 100 * 2**20 // 4096
    assert outside >= 0.9 * pages, (outside, inside, after)
    assert inside <= 0.1 * pages, (outside, inside, after)
    assert after >= 0.9 * pages, (outside, inside, after)
