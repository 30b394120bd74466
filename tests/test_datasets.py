"""The synthetic data generated block by block."""

from __future__ import annotations

import numpy as np
import pytest

from dask_sgd.datasets import make_classification_blocks, make_linear_classification

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_classification_blocks(1000, 10, n_informative=4, chunk_rows=400),
        lambda: make_linear_classification(1000, 10, chunk_rows=400),
    ],
    ids=["classification_blocks", "linear_classification"],
)
def test_blocks_are_row_major_and_the_same_every_time(make):
    """Row-major, as training reads rows (a column-major block costs a slower shuffle)."""
    X, y = make()
    strides = X.map_blocks(lambda b: np.array([b.strides]), chunks=(1, 2), dtype=int)
    assert all(row > column for row, column in strides.compute(scheduler="sync")), strides
    first, again = (made[0].compute(scheduler="sync") for made in (make(), make()))
    np.testing.assert_array_equal(first, again)
    labels = y.compute(scheduler="sync")
    assert set(np.unique(labels)) == {0, 1} and len(labels) == len(first) == 1000
