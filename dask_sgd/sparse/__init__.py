"""Sparse models: sparse minibatches, sparse gradients, lazily regularized parameters.

On sparse input (SciPy CSR blocks, hashed features, 2^20 columns and more) a minibatch
touches a few of the model's columns: its gradient is a :class:`SparseVector` over them,
the parameters are updated and exchanged at those columns only.
"""

from __future__ import annotations

from dask_sgd.sparse.vector import SparseVector

__all__ = ["SparseVector"]
