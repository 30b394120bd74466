"""The compiled products of the linear model agree with NumPy's, and are used only where they
apply."""

from __future__ import annotations

import dask.config
import numpy as np
import pytest

from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective, products
from dask_sgd.models.linear import StandardizedLinearModel
from dask_sgd.penalties import get_penalty

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process


def loss_and_grad(objective, theta, X, Y, weight, *, compiled: bool):
    with dask.config.set({"dask-sgd.compiled-kernels": compiled}):
        return objective.loss_and_grad(theta, X, Y, weight)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("standardized", [False, True])
def test_compiled_products_give_numpys_loss_and_gradient(dtype, n_outputs, standardized):
    rng = np.random.default_rng(0)
    n_rows, n_features = 300, 17
    X = (rng.standard_normal((n_rows, n_features)) * 3 + 1).astype(dtype)
    model = (
        StandardizedLinearModel(n_features, n_outputs, mean=X.mean(0), std=X.std(0))
        if standardized
        else LinearModel(n_features, n_outputs)
    )
    loss = get_loss("log_loss", multinomial=n_outputs > 1)
    Y = np.eye(n_outputs, dtype=dtype)[rng.integers(0, n_outputs, n_rows)]
    if n_outputs == 1:
        Y = np.where(rng.random((n_rows, 1)) < 0.5, 1, -1).astype(dtype)
    objective = Objective(model, loss, get_penalty("l2", alpha=1e-3))
    theta = rng.standard_normal(model.layout.size).astype(dtype)
    weight = rng.random(n_rows).astype(dtype)

    assert products._kernels_for(X, theta) is not None  # the compiled path applies here
    ours = loss_and_grad(objective, theta, X, Y, weight, compiled=True)
    reference = loss_and_grad(objective, theta, X, Y, weight, compiled=False)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(ours[0], reference[0], rtol=rtol)
    np.testing.assert_allclose(ours[1], reference[1], rtol=rtol, atol=rtol)
    assert ours[1].dtype == reference[1].dtype == dtype


@pytest.mark.timeout(60)
def test_non_finite_values_propagate_as_in_numpy():
    X = np.ones((100, 4))
    X[3, 2] = np.inf
    coef = np.array([[1.0, 0.0, 0.0, -1.0]])
    raw = products.raw_outputs(X, coef, np.zeros(1))
    with np.errstate(invalid="ignore"):
        expected = X @ coef.T
    np.testing.assert_array_equal(np.isnan(raw), np.isnan(expected))  # inf · 0 is NaN
    draw = np.ones((100, 1))
    draw[5] = np.nan
    assert np.isnan(products.transposed_times(np.ones((100, 4)), draw)).all()


@pytest.mark.timeout(60)
def test_other_minibatches_take_numpys_products():
    X = np.ones((200, 4))
    theta = np.ones(4)
    assert products._kernels_for(X[:10], theta) is None  # too few rows to pay off
    assert products._kernels_for(np.asfortranarray(X), theta) is None  # column-major
    assert products._kernels_for(X.astype(np.float32), theta) is None  # dtypes differ
    assert products._kernels_for(X.astype(int), np.ones(4, dtype=int)) is None
    with dask.config.set({"dask-sgd.compiled-kernels": False}):
        assert products._kernels_for(X, theta) is None


@pytest.mark.timeout(60)
def test_warm_up_loads_the_kernels_in_the_background_once():
    products._compiled.cache_clear()
    products.warm_up().join()
    assert products._compiled.cache_info().misses == 1
    assert products.warm_up() is None  # loaded: no second thread
    with dask.config.set({"dask-sgd.compiled-kernels": False}):
        products._compiled.cache_clear()
        assert products.warm_up() is None
