"""Losses: derivatives against finite differences, values against scikit-learn's own."""

from __future__ import annotations

import numpy as np
import pytest

from dask_sgd.losses import (
    CLASSIFICATION_LOSSES,
    REGRESSION_LOSSES,
    Huber,
    LogLoss,
    MultinomialLogLoss,
    get_loss,
)

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

EPSILON = 0.3  # for huber and the epsilon-insensitive losses
H = 1e-6  # finite-difference step
MARGIN = 1e-3  # how far a grid point must stay from a kink

# The points where a loss is not differentiable: thresholds of the margin z = y * raw for the
# classification losses, values of the residual r = raw - y for the regression losses.
MARGIN_KINKS = {
    "hinge": [1.0],
    "perceptron": [0.0],
    "squared_hinge": [],
    "modified_huber": [],
    "log_loss": [],
}
RESIDUAL_KINKS = {
    "squared_error": [],
    "huber": [-EPSILON, EPSILON],
    "epsilon_insensitive": [-EPSILON, 0.0, EPSILON],
    "squared_epsilon_insensitive": [],
}


def away_from_kinks(name, y, raw):
    """A mask of the (y, raw) pairs at least MARGIN from every kink of the loss ``name``."""
    keep = np.ones(raw.shape, dtype=bool)
    for kink in MARGIN_KINKS.get(name, []):
        keep &= np.abs(y * raw - kink) > MARGIN
    for kink in RESIDUAL_KINKS.get(name, []):
        keep &= np.abs(raw - y - kink) > MARGIN
    return keep


def grid(targets):
    """Targets and raw values, shape (n_targets, n_raw): every raw value against every target."""
    # An irregular grid plus the kinks themselves (0, ±1 and ±1 ± EPSILON for targets ±1) and
    # points just beside them: the kinks are filtered out, their neighbours are kept.
    kinks = np.array([0.0, 1.0, -1.0, 1 + EPSILON, 1 - EPSILON, -1 + EPSILON, -1 - EPSILON])
    raw = np.concatenate([np.linspace(-3.1, 3.1, 63) + 0.0137, kinks, kinks + 0.002, kinks - 0.002])
    y, raw = np.meshgrid(np.asarray(targets, dtype=np.float64), raw, indexing="ij")
    return y, raw


def central_difference(f, raw):
    return (f(raw + H) - f(raw - H)) / (2 * H)


@pytest.mark.parametrize("name", CLASSIFICATION_LOSSES)
def test_dloss_matches_finite_differences_on_binary_targets(name):
    loss = get_loss(name, epsilon=EPSILON)
    y, raw = grid([-1.0, 1.0])
    keep = away_from_kinks(name, y, raw)
    assert keep.mean() > 0.85  # the test still covers most of the grid

    numeric = central_difference(lambda r: loss.loss(y, r), raw)
    analytic = loss.dloss(y, raw)

    assert analytic.shape == raw.shape
    np.testing.assert_allclose(analytic[keep], numeric[keep], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", REGRESSION_LOSSES)
def test_dloss_matches_finite_differences_on_real_targets(name):
    loss = get_loss(name, epsilon=EPSILON)
    y, raw = grid([-2.2, -0.41, 0.0, 0.77, 1.9])
    keep = away_from_kinks(name, y, raw)

    numeric = central_difference(lambda r: loss.loss(y, r), raw)

    np.testing.assert_allclose(loss.dloss(y, raw)[keep], numeric[keep], rtol=1e-6, atol=1e-6)


def test_kink_filter_is_not_vacuous():
    # The grid does contain points near the kinks, so the filter really removes something.
    y, raw = grid([-1.0, 1.0])
    assert not away_from_kinks("hinge", y, raw).all()
    assert not away_from_kinks("epsilon_insensitive", y, raw).all()


def multinomial_grid():
    rng = np.random.default_rng(0)
    raw = rng.normal(scale=2.0, size=(12, 4))
    labels = rng.integers(0, 4, size=12)
    return np.eye(4)[labels], raw, labels


def test_multinomial_dloss_matches_finite_differences():
    loss = get_loss("log_loss", multinomial=True)
    y, raw, _ = multinomial_grid()
    numeric = np.empty_like(raw)
    for k in range(raw.shape[1]):
        step = np.zeros_like(raw)
        step[:, k] = H
        # The loss is one value per row, and row i depends only on raw[i].
        numeric[:, k] = (loss.loss(y, raw + step) - loss.loss(y, raw - step)) / (2 * H)

    np.testing.assert_allclose(loss.dloss(y, raw), numeric, rtol=1e-6, atol=1e-8)


def test_multinomial_loss_is_cross_entropy_of_softmax():
    loss = get_loss("log_loss", multinomial=True)
    assert isinstance(loss, MultinomialLogLoss)
    assert loss.rowwise
    y, raw, labels = multinomial_grid()
    softmax = np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True)
    rows = np.arange(raw.shape[0])

    values = loss.loss(y, raw)

    assert values.shape == (raw.shape[0],)
    np.testing.assert_allclose(values, -np.log(softmax[rows, labels]), rtol=1e-12)
    np.testing.assert_allclose(loss.dloss(y, raw), softmax - y, rtol=1e-12, atol=1e-15)


def test_multinomial_loss_is_finite_for_huge_raw_values():
    loss = get_loss("log_loss", multinomial=True)
    raw = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]])
    y = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])

    values = loss.loss(y, raw)
    grad = loss.dloss(y, raw)

    np.testing.assert_allclose(values, [2e4, 0.0], atol=1e-9)
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-12)


def test_binary_log_loss_is_softplus_of_minus_margin():
    loss = get_loss("log_loss")
    assert isinstance(loss, LogLoss)
    y, raw = grid([-1.0, 1.0])
    z = y * raw
    np.testing.assert_allclose(loss.loss(y, raw), np.log1p(np.exp(-z)), rtol=1e-12)
    np.testing.assert_allclose(loss.dloss(y, raw), -y / (1 + np.exp(z)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_loss_does_not_overflow(dtype):
    loss = get_loss("log_loss")
    y = np.array([[1.0, -1.0, 1.0, -1.0]], dtype=dtype)
    raw = np.array([[1e4, 1e4, -1e4, -1e4]], dtype=dtype)

    with np.errstate(over="raise", invalid="raise", divide="raise"):
        values = loss.loss(y, raw)
        grad = loss.dloss(y, raw)

    assert np.isfinite(values).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(values, [[0.0, 1e4, 1e4, 0.0]], atol=1e-6)
    np.testing.assert_allclose(grad, [[0.0, 1.0, -1.0, 0.0]], atol=1e-6)


# --- scikit-learn's implementations ------------------------------------------------------


def sgd_fast_losses():
    """scikit-learn's SGD losses with ``py_loss(p, y)`` / ``py_dloss(p, y)``, by our names.

    scikit-learn >= 1.6 keeps only these in ``_sgd_fast``; its huber, squared and log losses
    come from ``sklearn._loss._loss``, compared below through their array methods.
    """
    sgd_fast = pytest.importorskip("sklearn.linear_model._sgd_fast")
    candidates = {
        "hinge": ("Hinge", (1.0,)),
        "perceptron": ("Hinge", (0.0,)),
        "squared_hinge": ("SquaredHinge", (1.0,)),
        "modified_huber": ("ModifiedHuber", ()),
        "epsilon_insensitive": ("EpsilonInsensitive", (EPSILON,)),
        "squared_epsilon_insensitive": ("SquaredEpsilonInsensitive", (EPSILON,)),
    }
    return {
        name: getattr(sgd_fast, cls)(*args)
        for name, (cls, args) in candidates.items()
        if hasattr(sgd_fast, cls)
    }


def common_loss_array_api():
    """scikit-learn's ``_loss`` losses (used by SGD since 1.6), with an array ``loss`` method."""
    module = pytest.importorskip("sklearn._loss._loss")
    needed = ("CyHuberLoss", "CyHalfSquaredError", "CyHalfBinomialLoss", "CyHalfMultinomialLoss")
    if not all(hasattr(module, name) for name in needed):
        pytest.skip("this scikit-learn has no Cy*Loss classes")
    return module


SGD_FAST_NAMES = (
    "hinge",
    "perceptron",
    "squared_hinge",
    "modified_huber",
    "epsilon_insensitive",
    "squared_epsilon_insensitive",
)


@pytest.mark.parametrize("name", SGD_FAST_NAMES)
def test_loss_and_dloss_equal_sklearn_sgd_fast(name):
    reference = sgd_fast_losses().get(name)
    if reference is None:
        pytest.skip(f"scikit-learn's _sgd_fast has no class for {name!r}")
    loss = get_loss(name, epsilon=EPSILON)
    y, raw = grid([-1.0, 1.0])
    keep = away_from_kinks(name, y, raw)
    expected = np.vectorize(reference.py_loss)(raw, y)  # note the order: (p, y)
    expected_grad = np.vectorize(reference.py_dloss)(raw, y)

    np.testing.assert_allclose(loss.loss(y, raw), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss.dloss(y, raw)[keep], expected_grad[keep], rtol=1e-12)


@pytest.mark.parametrize("name", ["epsilon_insensitive", "squared_epsilon_insensitive"])
def test_regression_losses_equal_sklearn_sgd_fast_on_real_targets(name):
    reference = sgd_fast_losses().get(name)
    if reference is None:
        pytest.skip(f"scikit-learn's _sgd_fast has no class for {name!r}")
    loss = get_loss(name, epsilon=EPSILON)
    y, raw = grid([-2.2, 0.0, 0.77])
    keep = away_from_kinks(name, y, raw)

    np.testing.assert_allclose(
        loss.loss(y, raw), np.vectorize(reference.py_loss)(raw, y), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        loss.dloss(y, raw)[keep], np.vectorize(reference.py_dloss)(raw, y)[keep], rtol=1e-12
    )


def sklearn_array_loss(reference, y_true, raw):
    out = np.empty(y_true.shape[0])
    reference.loss(y_true=y_true, raw_prediction=raw, sample_weight=None, loss_out=out)
    return out


def sklearn_array_gradient(reference, y_true, raw):
    out = np.empty_like(raw)
    reference.gradient(y_true=y_true, raw_prediction=raw, sample_weight=None, gradient_out=out)
    return out


@pytest.mark.parametrize(
    ("name", "cls", "args"),
    [("huber", "CyHuberLoss", (EPSILON,)), ("squared_error", "CyHalfSquaredError", ())],
)
def test_regression_losses_equal_sklearn_common_losses(name, cls, args):
    reference = getattr(common_loss_array_api(), cls)(*args)
    loss = get_loss(name, epsilon=EPSILON)
    y, raw = (a.ravel() for a in grid([-2.2, -1.0, 0.0, 0.77, 1.0]))
    keep = away_from_kinks(name, y, raw)

    np.testing.assert_allclose(loss.loss(y, raw), sklearn_array_loss(reference, y, raw), rtol=1e-12)
    np.testing.assert_allclose(
        loss.dloss(y, raw)[keep], sklearn_array_gradient(reference, y, raw)[keep], rtol=1e-12
    )


def test_huber_uses_its_epsilon():
    assert get_loss("huber", epsilon=1.35) == Huber(1.35)
    loss = get_loss("huber", epsilon=0.5)
    y = np.zeros(3)
    raw = np.array([0.25, 2.0, -2.0])
    np.testing.assert_allclose(loss.loss(y, raw), [0.03125, 0.875, 0.875])
    np.testing.assert_allclose(loss.dloss(y, raw), [0.25, 0.5, -0.5])


def test_log_loss_equals_sklearn_binomial_loss():
    reference = common_loss_array_api().CyHalfBinomialLoss()
    loss = get_loss("log_loss")
    y, raw = (a.ravel() for a in grid([-1.0, 1.0]))
    y01 = (y + 1) / 2  # scikit-learn's binomial loss takes targets in {0, 1}

    np.testing.assert_allclose(
        loss.loss(y, raw), sklearn_array_loss(reference, y01, raw), rtol=1e-10
    )
    np.testing.assert_allclose(
        loss.dloss(y, raw), sklearn_array_gradient(reference, y01, raw), rtol=1e-10, atol=1e-15
    )


def test_multinomial_loss_equals_sklearn_multinomial_loss():
    reference = common_loss_array_api().CyHalfMultinomialLoss()
    loss = get_loss("log_loss", multinomial=True)
    y, raw, labels = multinomial_grid()
    labels = labels.astype(np.float64)

    np.testing.assert_allclose(
        loss.loss(y, raw), sklearn_array_loss(reference, labels, raw), rtol=1e-10
    )
    np.testing.assert_allclose(
        loss.dloss(y, raw), sklearn_array_gradient(reference, labels, raw), rtol=1e-10, atol=1e-14
    )


# --- dtypes and names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIFICATION_LOSSES)
def test_float32_inputs_stay_float32(name):
    loss = get_loss(name, epsilon=EPSILON)
    y, raw = grid([-1.0, 1.0])
    y, raw = y.astype(np.float32), raw.astype(np.float32)

    values, grad = loss.loss(y, raw), loss.dloss(y, raw)

    assert values.dtype == np.float32
    assert grad.dtype == np.float32
    keep = away_from_kinks(name, y, raw)
    reference = loss.loss(y.astype(np.float64), raw.astype(np.float64))
    np.testing.assert_allclose(values, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        grad[keep],
        loss.dloss(y.astype(np.float64), raw.astype(np.float64))[keep],
        rtol=1e-5,
        atol=1e-6,
    )


def test_multinomial_float32_stays_float32():
    loss = get_loss("log_loss", multinomial=True)
    y, raw, _ = multinomial_grid()
    y, raw = y.astype(np.float32), raw.astype(np.float32)
    assert loss.loss(y, raw).dtype == np.float32
    assert loss.dloss(y, raw).dtype == np.float32


def test_loss_names():
    assert set(REGRESSION_LOSSES) <= set(CLASSIFICATION_LOSSES)
    assert get_loss("perceptron").threshold == 0.0
    assert get_loss("hinge").threshold == 1.0
    assert not isinstance(get_loss("log_loss", multinomial=False), MultinomialLogLoss)
    with pytest.raises(ValueError, match="not supported"):
        get_loss("absolute_error")


# --- the training step's shortcuts ---------------------------------------------------------

ALL_LOSSES = [(name, dict(epsilon=EPSILON)) for name in CLASSIFICATION_LOSSES] + [
    ("log_loss", dict(multinomial=True))
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "options"), ALL_LOSSES)
def test_loss_sum_and_dloss_equal_loss_and_dloss(name, options, dtype):
    loss = get_loss(name, **options)
    y, raw = grid([-1.0, 1.0])
    raw = np.concatenate([raw, 40 * raw], axis=1)  # margins up to ±124 as well
    y = np.concatenate([y, y], axis=1)
    if options.get("multinomial"):  # one-hot rows of 2 classes
        raw = raw.reshape(-1, 2)
        y = np.eye(2)[np.arange(raw.shape[0]) % 2]
    y, raw = y.astype(dtype), raw.astype(dtype)

    loss_sum, dloss = loss.loss_sum_and_dloss(y, raw)

    rtol, atol = (1e-5, 1e-7) if dtype == np.float32 else (1e-12, 1e-15)
    np.testing.assert_allclose(loss_sum, loss.loss(y, raw).sum(), rtol=rtol)
    np.testing.assert_allclose(dloss, loss.dloss(y, raw), rtol=rtol, atol=atol)
    assert dloss.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_log_loss_does_not_overflow(dtype):
    y = np.array([[1.0, -1.0, 1.0, -1.0]], dtype=dtype)
    raw = np.array([[1e4, 1e4, -1e4, -1e4]], dtype=dtype)

    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss_sum, dloss = LogLoss().loss_sum_and_dloss(y, raw)

    assert loss_sum == pytest.approx(2e4)
    np.testing.assert_allclose(dloss, [[0.0, 1.0, -1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize(("name", "options"), ALL_LOSSES)
def test_bounded_dloss_is_what_the_objective_may_skip_clipping_for(name, options):
    """A loss that says its derivative is bounded keeps it below 4 (modified Huber's bound)
    on raw values up to 1e12; the squared losses say it is not, and it is not."""
    loss = get_loss(name, **options)
    raw = np.array([-1e12, -1e6, -3.0, 0.0, 3.0, 1e6, 1e12])
    if options.get("multinomial"):
        y, raw = np.eye(2)[[0, 1] * 4][:7], np.stack([raw, -raw], axis=1)
    else:
        y = np.where(np.arange(7) % 2, 1.0, -1.0)[:, None]
        raw = raw[:, None]

    largest = np.abs(loss.dloss(y, raw)).max()

    assert (largest <= 4) == loss.bounded_dloss, largest
