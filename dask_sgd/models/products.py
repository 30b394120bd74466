"""The linear model's two matrix products, compiled for dense NumPy minibatches.

A linear model's step is two products with the minibatch: ``X @ coef.T + intercept``
forward and ``draw.T @ X`` backward. For W1's minibatches (1024 rows × 100 columns) OpenBLAS
does each at about 11.5 M rows/s on one core here, while two plain loops compiled by numba
run both products, and the loss between them, at about 15 M rows/s: BLAS's fixed cost per
call weighs on products this thin (``docs/benchmarks.md``, "A cheaper step"). The loops
release the GIL, so the worker's event loop (the exchanges, the heartbeats) runs beside them.

They are used for C-contiguous float32 or float64 NumPy minibatches of at least
``MIN_ROWS`` rows whose parameters have the same dtype; anything else (sparse, CuPy,
column-major, small minibatches) takes the array's own ``@``, which stays the reference the
tests compare against. The Dask setting ``dask-sgd.compiled-kernels: false`` turns them off
(on the workers: ``DASK_DASK_SGD__COMPILED_KERNELS=false`` in their environment). numba
compiles them on first use and caches the code next to this module; a new process still
pays about 0.6 s to start numba, once, which a fit on Dask starts on every worker in the
background while it checks the blocks (:func:`warm_up`).

Their sums run in another order than BLAS's (``reassoc``, so that they vectorize), so the
results agree to rounding, not bit for bit. No other fast-math flag is set: a NaN or an
infinity propagates as in NumPy, so a diverging step is still refused.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import dask.config
import numpy as np

Array = Any

#: below this many rows a minibatch's products cost less than a call's overhead either way
MIN_ROWS = 64


def raw_outputs(X: Array, coef: Array, intercept: Array) -> Array:
    """``X @ coef.T + intercept``, shape ``(n_rows, n_outputs)``."""
    kernels = _kernels_for(X, coef)
    if kernels is None:
        return X @ coef.T + intercept
    out = np.empty((X.shape[0], coef.shape[0]), dtype=X.dtype)
    kernels[0](X, np.ascontiguousarray(coef), intercept, out)
    return out


def transposed_times(X: Array, draw: Array) -> Array:
    """``(X.T @ draw).T``, shape ``(n_outputs, n_features)``."""
    kernels = _kernels_for(X, draw)
    if kernels is None:
        return (X.T @ draw).T
    out = np.empty((draw.shape[1], X.shape[1]), dtype=X.dtype)
    kernels[1](X, np.ascontiguousarray(draw), out)
    return out


def _kernels_for(X: Array, other: Array):
    """The compiled kernels if they apply to ``X`` (and ``other``'s dtype), else None."""
    if (
        type(X) is not np.ndarray
        or X.ndim != 2
        or X.shape[0] < MIN_ROWS
        or X.dtype not in (np.float32, np.float64)
        or other.dtype != X.dtype
        or not X.flags.c_contiguous
        or not dask.config.get("dask-sgd.compiled-kernels", True)
    ):
        return None
    return _compiled()


@cache
def _compiled():
    """The kernels, compiled on first use (None without numba)."""
    try:
        from dask_sgd.models import _kernels
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return _kernels.forward, _kernels.backward


def warm_up() -> threading.Thread | None:
    """Start numba and load (or compile) the kernels in a thread of their own, once per
    process: ``client.run(warm_up)`` returns at once, and the first step finds them ready.
    Returns the thread (None if the kernels were loaded, or are off)."""
    if not dask.config.get("dask-sgd.compiled-kernels", True) or _compiled.cache_info().misses:
        return None
    thread = threading.Thread(target=_load_kernels, name="dask-sgd-kernels", daemon=True)
    thread.start()
    return thread


def _load_kernels() -> None:
    kernels = _compiled()
    if kernels is None:  # pragma: no cover - numba is a dependency
        return
    for dtype in (np.float64, np.float32):
        X, coef = np.zeros((1, 1), dtype), np.zeros((1, 1), dtype)
        kernels[0](X, coef, np.zeros(1, dtype), np.empty((1, 1), dtype))
        kernels[1](X, coef, np.empty((1, 1), dtype))


def start_warm_up() -> None:
    """:func:`warm_up` for ``client.run``, which would send its thread back."""
    warm_up()
