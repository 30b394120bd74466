"""A sparse vector: what a sparse minibatch's gradient is, and what a sparse push or pull moves.

A :class:`SparseVector` stands for a dense vector of ``size`` entries of which only those at
``indices`` (sorted, distinct) may be non-zero. It supports what the exchange rules do with
a contribution (``total + value``, ``total / count``, ``value[where]`` for a shard's slice)
so that one rule serves dense and sparse pushes alike, and what the wire needs (plain arrays,
pickled by Dask as buffers).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseVector:
    """``size`` entries, zero but at ``indices`` (sorted, distinct int64) where they are
    ``values``. An entry may be a row of several numbers (``values`` of shape ``(n, m)``):
    a local-SGD unit's change of θ and of its optimizer state at each entry.

    Examples
    --------
    >>> a = SparseVector([1, 4], [1.0, 2.0], 6)
    >>> b = SparseVector([0, 4], [3.0, 1.0], 6)
    >>> (a + b).to_dense()
    array([3., 1., 0., 0., 3., 0.])
    >>> ((0 + a + b) / 2)[3:6].to_dense()  # the slice [3, 6), as a shard holds it
    array([0. , 1.5, 0. ])
    """

    __slots__ = ("indices", "size", "values")

    def __init__(self, indices: Any, values: Any, size: int) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.values = np.asarray(values)
        self.size = int(size)
        if self.indices.ndim != 1 or self.values.shape[:1] != self.indices.shape:
            raise ValueError(
                f"{self.indices.shape[0]} indices for values of shape {self.values.shape}."
            )

    @classmethod
    def gather(cls, dense: Any, indices: Any) -> SparseVector:
        """The entries of ``dense`` at ``indices`` (sorted, distinct)."""
        indices = np.asarray(indices, dtype=np.int64)
        return cls(indices, np.asarray(dense)[indices], np.shape(dense)[0])

    @classmethod
    def joined(cls, parts: list[tuple[int, SparseVector]], size: int) -> SparseVector:
        """One vector of ``size`` entries from ``(offset, part)`` pairs of disjoint slices,
        in order of their offsets (the shards' answers, say)."""
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0), size)
        indices = np.concatenate([part.indices + offset for offset, part in parts])
        return cls(indices, np.concatenate([part.values for _, part in parts]), size)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def nbytes(self) -> int:
        """The bytes that the vector moves: its indices and its values."""
        return self.indices.nbytes + self.values.nbytes

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, where: slice) -> SparseVector:
        """The entries in the slice ``where`` (step 1), indexed from its start."""
        start, stop, step = where.indices(self.size)
        if step != 1:
            raise ValueError("A sparse vector is sliced by contiguous ranges only.")
        lo, hi = np.searchsorted(self.indices, [start, stop])
        return SparseVector(self.indices[lo:hi] - start, self.values[lo:hi], stop - start)

    def __add__(self, other: Any) -> SparseVector:
        if isinstance(other, int | float) and other == 0:
            return self  # the start of a sum
        if not isinstance(other, SparseVector):
            return NotImplemented
        if other.size != self.size:
            raise ValueError(f"Adding sparse vectors of {self.size} and {other.size} entries.")
        return SparseVector.sum_of([self, other])

    @classmethod
    def sum_of(cls, vectors: list[SparseVector]) -> SparseVector:
        """The sum of vectors of one size: their entries merged by one stable sort, which
        runs through each vector's sorted indices as a presorted run."""
        indices = np.concatenate([vector.indices for vector in vectors])
        values = np.concatenate([vector.values for vector in vectors])
        order = np.argsort(indices, kind="stable")
        indices, values = indices[order], values[order]
        starts = np.flatnonzero(np.r_[True, indices[1:] != indices[:-1]])
        return cls(indices[starts], np.add.reduceat(values, starts, axis=0), vectors[0].size)

    __radd__ = __add__

    def __mul__(self, factor: float) -> SparseVector:
        return SparseVector(self.indices, self.values * factor, self.size)

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> SparseVector:
        return SparseVector(self.indices, self.values / divisor, self.size)

    def astype(self, dtype: Any, copy: bool = True) -> SparseVector:
        return SparseVector(self.indices, self.values.astype(dtype, copy=copy), self.size)

    def to_dense(self) -> np.ndarray:
        """The dense vector (for tests and small vectors only)."""
        dense = np.zeros((self.size, *self.values.shape[1:]), dtype=self.values.dtype)
        dense[self.indices] = self.values
        return dense

    def __repr__(self) -> str:
        return f"SparseVector({self.indices.size} of {self.size} entries, {self.dtype})"
