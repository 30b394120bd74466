"""The layout of a flat parameter vector: name -> (slice, shape).

All parameters of a model live in one flat vector θ. Sharding, checkpoints and optimizers see
only θ; models read named views of it through the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dask_sgd._array import get_namespace

Array = Any


@dataclass(frozen=True)
class Layout:
    """Named, contiguous blocks of a flat parameter vector.

    Examples
    --------
    >>> import numpy as np
    >>> layout = Layout.from_shapes({"coef": (2, 3), "intercept": (2,)})
    >>> layout.size
    8
    >>> layout.view(np.arange(8.0), "intercept")
    array([6., 7.])
    """

    entries: tuple[tuple[str, slice, tuple[int, ...]], ...]

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> Layout:
        entries, start = [], 0
        for name, shape in shapes.items():
            stop = start + math.prod(shape)
            entries.append((name, slice(start, stop), tuple(shape)))
            start = stop
        return cls(tuple(entries))

    @property
    def size(self) -> int:
        return self.entries[-1][1].stop if self.entries else 0

    def slice(self, name: str) -> slice:
        return self._entry(name)[1]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name)[2]

    def view(self, theta: Array, name: str) -> Array:
        """The block ``name`` of ``theta``, reshaped (a view, not a copy)."""
        _, where, shape = self._entry(name)
        return get_namespace(theta).reshape(theta[where], shape)

    def _entry(self, name: str) -> tuple[str, slice, tuple[int, ...]]:
        for entry in self.entries:
            if entry[0] == name:
                return entry
        raise KeyError(name)
