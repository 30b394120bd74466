"""A sparse minibatch's loss and gradient at the columns it touches only.

A CSR minibatch of hashed features touches a few hundred of a model's 2^20 or more columns.
:func:`sparse_loss_and_grad` computes the loss on a *compact* model made of those columns
(the minibatch's column indices renumbered, its data shared, nothing dense of the model's
width), so that a step costs O(touched entries), not O(n_features).

The penalty is left out: :class:`dask_sgd.sparse.lazy.LazyParams` applies it lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from dask_sgd.models.linear import LinearModel
from dask_sgd.models.objective import MAX_DLOSS
from dask_sgd.sparse.vector import SparseVector

Array = Any


def touched_columns(X: Any) -> np.ndarray:
    """The sorted distinct column indices (int64) that a CSR minibatch stores entries in."""
    ordered = np.sort(X.indices).astype(np.int64, copy=False)
    return ordered[_firsts(ordered)]


def _firsts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts (a mask). np.unique's own
    hashing takes several times longer on 40,000 column indices."""
    firsts = np.ones(ordered.shape[0], dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=firsts[1:])
    return firsts


def touched_and_inverse(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """A CSR minibatch's touched columns (sorted) and, for each stored entry, the position
    of its column among them: what :func:`sparse_loss_and_grad` needs, by one sort (a unit
    that takes its minibatches ahead computes it once, for its pull and its gradient)."""
    return _unique_inverse(X.indices)


def _unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` (int64) by one sort."""
    order = np.argsort(values, kind="stable")
    ordered = values[order].astype(np.int64, copy=False)
    firsts = _firsts(ordered)
    inverse = np.empty(values.shape[0], dtype=np.int64)
    inverse[order] = np.cumsum(firsts) - 1
    return ordered[firsts], inverse


def param_indices(model: LinearModel, columns: Any) -> np.ndarray:
    """The flat θ indices of ``coef[:, columns]`` for every output, then every intercept,
    ascending (the layout: ``coef`` of shape (n_outputs, n_features) row-major, then
    ``intercept``).

    Examples
    --------
    >>> param_indices(LinearModel(n_features=5, n_outputs=2), [1, 3])
    array([ 1,  3,  6,  8, 10, 11])
    """
    columns = np.asarray(columns, dtype=np.int64)
    n_outputs, n_features = model.n_outputs, model.n_features
    coef = (np.arange(n_outputs, dtype=np.int64)[:, None] * n_features + columns).reshape(-1)
    intercept = n_outputs * n_features + np.arange(n_outputs, dtype=np.int64)
    return np.concatenate([coef, intercept])


def _check_model(model: Any) -> None:
    if type(model) is not LinearModel:
        raise TypeError(f"Sparse gradients need a plain LinearModel; got {type(model).__name__}.")


def _csr(X: Any, caller: str) -> Any:
    if not sp.issparse(X):
        raise TypeError(f"{caller} takes a SciPy sparse minibatch, not {type(X)}.")
    return X if X.format == "csr" else X.tocsr()


def _compact_forward(model, values: np.ndarray, indices, X, touched):
    """The raw outputs of a CSR minibatch by the compact model (column j of X is column
    ``inverse[j]`` of its touched ones), and what its gradient needs: each stored entry's
    row, ``inverse``, the number of touched columns and their θ indices."""
    _check_model(model)
    indices = np.asarray(indices, dtype=np.int64)
    # plain NumPy on X's arrays (a SciPy matrix costs more to build than the products)
    columns, inverse = _unique_inverse(X.indices) if touched is None else touched
    n_rows, n_touched = X.shape[0], columns.shape[0]
    rows = np.repeat(np.arange(n_rows), np.diff(X.indptr))
    where = param_indices(model, columns)
    if np.array_equal(indices, where):  # as the in-process loop asks
        gathered = values
    else:
        positions = np.searchsorted(indices, where)
        if positions.size and (
            positions[-1] >= indices.shape[0] or not np.array_equal(indices[positions], where)
        ):
            raise ValueError("The indices do not cover the minibatch's touched parameters.")
        gathered = values[positions]
    n_coef = model.n_outputs * n_touched
    coef = gathered[:n_coef].reshape(model.n_outputs, n_touched)
    intercept = gathered[n_coef:]
    raw = np.empty((n_rows, model.n_outputs), dtype=np.result_type(X.dtype, values.dtype))
    for o in range(model.n_outputs):
        products = X.data * coef[o, inverse]
        raw[:, o] = np.bincount(rows, weights=products, minlength=n_rows) + intercept[o]
    return raw, (rows, inverse, n_touched, where)


def sparse_loss_sum(
    objective: Any,
    values: Array,
    indices: Array,
    X: Any,
    Y: Array,
    sample_weight: Array | None = None,
    touched: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """The weighted loss of a CSR minibatch summed over its rows, without the penalty:
    :meth:`Objective.value`'s first term × the rows, at θ's entries ``values`` at ``indices``
    (sorted; covering :func:`param_indices` of the touched columns). ``touched`` is
    :func:`touched_and_inverse` of ``X``, if already known."""
    X = _csr(X, "sparse_loss_sum")
    raw, _ = _compact_forward(objective.model, np.asarray(values), indices, X, touched)
    per_row = objective.loss.loss(Y, raw)
    if not objective.loss.rowwise:
        per_row = per_row.sum(axis=1)
    if sample_weight is not None:
        per_row = per_row * sample_weight
    return float(per_row.sum())


def sparse_loss_and_grad(
    objective: Any,
    values: Array,
    indices: Array,
    X: Any,
    Y: Array,
    sample_weight: Array | None = None,
    touched: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, SparseVector]:
    """``(Σ_i L_i, gradient of the weighted mean loss)`` of a CSR minibatch, sparse.

    ``indices`` (sorted) covers ``param_indices(model, touched_columns(X))`` and ``values``
    are θ at ``indices``. The loss and gradient are those of
    :meth:`Objective.loss_and_grad` (derivative clipped for unbounded losses, sample weights,
    divided by the rows, ``clip_norm``) *without the penalty*: the loss summed over the
    rows, and a :class:`SparseVector` of ``model.layout.size`` entries over
    ``param_indices(model, touched_columns(X))``. Its intercept entries are always there
    (zero without ``fit_intercept``). ``clip_norm`` clips the loss gradient's norm.
    ``touched`` is :func:`touched_and_inverse` of ``X``, if already known.
    """
    model = objective.model
    X, values = _csr(X, "sparse_loss_and_grad"), np.asarray(values)
    raw, (rows, inverse, n_touched, where) = _compact_forward(model, values, indices, X, touched)
    loss_sum, draw = objective.loss.loss_sum_and_dloss(Y, raw)
    if not objective.loss.bounded_dloss:
        draw = draw.clip(-MAX_DLOSS, MAX_DLOSS)
    if sample_weight is not None:
        draw = draw * sample_weight[:, None]
    coef_grad = np.empty((model.n_outputs, n_touched), dtype=np.float64)
    for o in range(model.n_outputs):
        coef_grad[o] = np.bincount(inverse, weights=X.data * draw[rows, o], minlength=n_touched)
    intercept_grad = draw.sum(axis=0)
    if not model.fit_intercept:
        intercept_grad = np.zeros_like(intercept_grad)
    grad = np.concatenate([coef_grad.reshape(-1), intercept_grad]).astype(values.dtype)
    grad /= X.shape[0]
    if objective.clip_norm is not None:
        norm = float((grad * grad).sum()) ** 0.5
        if objective.clip_norm < norm < float("inf"):  # a non-finite one is the caller's
            grad = grad * (objective.clip_norm / norm)
    return float(loss_sum), SparseVector(where, grad, model.layout.size)
