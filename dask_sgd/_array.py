"""Array-module helpers: which namespace an array lives in, the few operations that NumPy
1.26, CuPy and the array API standard spell differently, and host copies.

The hot path (losses, models, optimizers, a unit's steps) takes its namespace from the
arrays it is given, so that CuPy blocks train on their GPU; ``tests/test_array_api.py`` runs
it on ``array_api_strict`` arrays, so that a NumPy-only call there fails on any machine.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

Array = Any


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array namespace of ``arrays``: ``cupy`` for CuPy arrays, the array's own
    (``__array_namespace__``) for another library's array, else ``numpy``.

    NumPy arrays and scalars, SciPy sparse matrices, Python numbers and None count as NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> get_namespace(np.ones(3)).__name__
    'numpy'
    """
    for array in arrays:
        if type(array) is np.ndarray:  # the common case first: a step asks many times
            continue
        module = type(array).__module__
        if module.startswith("cupy"):
            import cupy

            return cupy
        if not module.startswith(("numpy", "scipy")) and hasattr(array, "__array_namespace__"):
            return array.__array_namespace__()
    return np


def astype(array: Array, dtype: Any) -> Array:
    """``array`` in ``dtype``, not copied when it has it already (NumPy's and CuPy's
    method, else the standard's function).

    Examples
    --------
    >>> astype(np.array([True, False]), np.float32)
    array([1., 0.], dtype=float32)
    """
    method = getattr(array, "astype", None)
    if method is not None:
        return method(dtype, copy=False)
    return get_namespace(array).astype(array, dtype, copy=False)


def concat(xp: ModuleType, arrays: list[Array]) -> Array:
    """The arrays joined along their first axis (``concat`` in the standard, ``concatenate``
    in NumPy 1.26 and CuPy)."""
    join = getattr(xp, "concat", None) or xp.concatenate
    return join(arrays)


def to_host(array: Any) -> np.ndarray:
    """Return ``array`` as a NumPy array (copying it off the GPU when it is a CuPy array)."""
    if hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
