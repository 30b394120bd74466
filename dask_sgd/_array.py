"""Array-module helpers: which namespace a block lives in (NumPy or CuPy), and host copies."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) that holds ``arrays``.

    SciPy sparse matrices and anything that is not a CuPy array count as NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> get_namespace(np.ones(3)).__name__
    'numpy'
    """
    for array in arrays:
        if type(array).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_host(array: Any) -> np.ndarray:
    """Return ``array`` as a NumPy array (copying it off the GPU when it is a CuPy array)."""
    if hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
