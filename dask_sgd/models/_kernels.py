"""The compiled loops of :mod:`dask_sgd.models.products` (imported on first use: numba takes
a while to start)."""

from __future__ import annotations

import numba

#: reassociation lets LLVM vectorize the sums; no flag that assumes finite values
jit = numba.njit(fastmath={"reassoc", "contract"}, nogil=True, cache=True)


@jit
def forward(X, coef, intercept, out):  # pragma: no cover - compiled
    """``out = X @ coef.T + intercept``."""
    n_rows, n_features = X.shape
    for i in range(n_rows):
        for k in range(coef.shape[0]):
            total = intercept[k]
            for j in range(n_features):
                total += X[i, j] * coef[k, j]
            out[i, k] = total


@jit
def backward(X, draw, out):  # pragma: no cover - compiled
    """``out = draw.T @ X``."""
    n_rows, n_features = X.shape
    out[:] = 0
    for i in range(n_rows):
        for k in range(draw.shape[1]):
            d = draw[i, k]
            for j in range(n_features):
                out[k, j] += d * X[i, j]
