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
    """``array`` as a NumPy array: itself if it is one, else a copy off its device (a CuPy
    array's ``get``; another library's array through DLPack, as the standard says).

    Examples
    --------
    >>> to_host([1.0, 2.0])
    array([1., 2.])
    """
    if type(array) is np.ndarray:
        return array
    if type(array).__module__.startswith("cupy"):
        return array.get()
    if hasattr(array, "__dlpack__") and not isinstance(array, np.generic):
        return np.from_dlpack(array)
    return np.asarray(array)


def is_host(array: Any) -> bool:
    """Whether ``array`` is host memory that NumPy works on (not a device array)."""
    return get_namespace(array) is np


def like(values: Any, array: Array, dtype: Any = None) -> Array:
    """``values`` (a NumPy array, or any the namespace takes) as an array of ``array``'s
    namespace, on its device, in ``dtype`` (the namespace's, or NumPy's) if given: how host
    values (parameters pulled from a shard, a model's constants, encoded targets) reach the
    device where a unit's blocks live. A copy only where one is needed.

    Examples
    --------
    >>> like([1, 2], np.ones(3), np.float32)
    array([1., 2.], dtype=float32)
    """
    xp = get_namespace(array)
    if xp is np:
        return np.asarray(values, dtype=dtype)
    if xp.__name__ == "cupy":
        with array.device:  # the array's GPU, not the thread's current one
            return xp.asarray(values, dtype=dtype)
    if isinstance(dtype, np.dtype | type):  # NumPy's, as the namespace names it
        dtype = getattr(xp, np.dtype(dtype).name)
    return xp.asarray(values, dtype=dtype, device=array.device)


def empty(shape: tuple, array: Array) -> Array:
    """A new array of ``shape`` in ``array``'s namespace, dtype and device (not zeroed)."""
    xp = get_namespace(array)
    if xp is np:
        return np.empty(shape, array.dtype)
    if xp.__name__ == "cupy":
        with array.device:
            return xp.empty(shape, array.dtype)
    return xp.empty(shape, dtype=array.dtype, device=array.device)


def host_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype of an array namespace's ``dtype`` (the same name: the standard names
    its dtypes as NumPy does).

    Examples
    --------
    >>> host_dtype("float32")
    dtype('float32')
    """
    try:
        return np.dtype(dtype)
    except TypeError:  # e.g. array_api_strict.float32, printed with its module's name
        return np.dtype(str(dtype).rsplit(".", 1)[-1])
