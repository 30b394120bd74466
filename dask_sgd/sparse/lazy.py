"""Lazily regularized parameters: a sparse step costs O(touched entries), not O(size).

:class:`LazyParams` holds a slice of a linear model's flat θ (all of it in process, a shard's
slice on the parameter server) with its optimizer's state. A step
``apply(indices, g, lr)`` at step ``t`` with the loss gradient ``g`` at ``indices`` is:

1. **L2** (``l2 = alpha·(1 − l1_ratio)``): every penalized entry shrinks,
   ``w ← (1 − lr·l2)·w``. As in scikit-learn, ``w = scale·v`` and the shrink is an O(1)
   update of ``scale``; when ``scale`` falls below 1e-9 it is folded into ``v`` (O(size),
   rare). A factor ``≤ 0`` sets every penalized entry to zero, as scikit-learn's
   ``max(0, 1 − η·α·(1 − ρ))``.
2. **The optimizer**, at ``indices`` only: the state there is gathered, caught up (below),
   passed with ``g`` to the transformation's own ``update`` and scattered back;
   ``w[indices] ← w[indices] − lr·direction``; entries outside ``penalized`` (the
   intercepts) take ``lr·unpenalized_rate`` (scikit-learn's 0.01 on sparse input).
3. **L1** (``l1 = alpha·l1_ratio``): cumulative truncation (Tsuruoka, Tsujii and Ananiadou,
   2009) as scikit-learn's ``l1penalty``: a running total ``u`` of ``lr·l1`` over the steps
   and, per entry, the penalty ``q`` it has received; the touched penalized entries are
   truncated towards zero by what they still owe, never past it.

**Catch-up rule.** An entry that no step touched for ``k`` steps had a zero loss gradient in
each of them: its optimizer state is what the state becomes under ``k`` zero inputs, the
factor ``zero_gradient_decay()`` of each leaf to the power ``k`` (momentum and RMSProp's
mean square ``× decay^k``, Adam's moments ``× b1^k`` and ``× b2^k`` with its scalar count
the global step, Adagrad's sum unchanged), and the entry does not move in those steps
(only the L2 shrink reaches it). This is the "lazy" rule of TensorFlow's LazyAdam and
PyTorch's SparseAdam: momentum's coasting on untouched entries is dropped. In a chain,
an untouched entry's direction counts as zero for the next transformation too.

**Averaging** (averaged SGD) keeps the running mean of ``w`` over the steps since
:meth:`LazyParams.start_averaging`, lazily: between two touches a penalized entry is
``scale_s·v``, so a running sum ``C`` of ``scale`` over the averaged steps settles its sum
``v·(C − C_last)`` when it is touched (unpenalized entries use the count of steps).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dask_sgd._tree import tree_leaves, tree_unflatten
from dask_sgd.optim import GradientTransformation

Array = Any

#: fold ``scale`` into the values below this, as scikit-learn's WeightVector does
RESCALE_BELOW = 1e-9

#: scikit-learn's factor on the intercept's step on sparse input (its
#: SPARSE_INTERCEPT_DECAY): the intercept moves at every step, a rare column's coefficient
#: seldom
SPARSE_INTERCEPT_RATE = 0.01


def zero_gradient_decays(optimizer: GradientTransformation, n_steps: int = 1) -> list:
    """Each state leaf's factor over ``n_steps`` steps with a zero gradient, in
    :func:`tree_leaves`' order (None for scalar leaves).

    Examples
    --------
    >>> from dask_sgd.optim import adam
    >>> zero_gradient_decays(adam(b1=0.5, b2=0.25), 2)
    [None, 0.25, 0.0625]
    """
    return [None if f is None else float(f) ** n_steps for f in _decay_leaves(optimizer)]


def _decay_leaves(optimizer: GradientTransformation) -> list:
    try:
        return tree_leaves(optimizer.zero_gradient_decay())
    except NotImplementedError as error:
        raise TypeError(f"Lazy sparse updates: {error}") from None


class LazyParams:
    """A flat parameter slice with lazy L2/L1 penalties, optimizer state and average.

    Parameters
    ----------
    params : ndarray
        The parameters (copied).
    optimizer : GradientTransformation
        An elementwise transformation that defines ``zero_gradient_decay``.
    l2, l1 : float
        ``alpha·(1 − l1_ratio)`` and ``alpha·l1_ratio``.
    penalized : slice
        The penalized entries (local indices); the others (intercepts) are never penalized.
    unpenalized_rate : float
        The factor of the learning rate of the entries outside ``penalized``.
    opt_state : optimizer state or None
        The state at ``step`` (``optimizer.init(params)`` if None).
    step : int
        The number of steps applied so far.

    Examples
    --------
    >>> from dask_sgd.optim import sgd
    >>> lazy = LazyParams(np.ones(4), sgd(), l2=0.5, l1=0.0, penalized=slice(0, 3))
    >>> lazy.apply(np.array([0]), np.array([1.0]), 0.1)
    >>> lazy.dense()[0]  # all coefficients shrink by 0.95; entry 0 also steps; 3 is free
    array([0.85, 0.95, 0.95, 1.  ])
    """

    def __init__(
        self,
        params: Array,
        optimizer: GradientTransformation,
        *,
        l2: float,
        l1: float,
        penalized: slice,
        unpenalized_rate: float = 1.0,
        opt_state: Any = None,
        step: int = 0,
    ) -> None:
        self._v = np.array(params, copy=True)
        self.size = self._v.shape[0]
        self.optimizer = optimizer
        factors = _decay_leaves(optimizer)
        if opt_state is None:
            opt_state = optimizer.init(self._v)
        self._like = opt_state
        leaves = tree_leaves(opt_state)
        if len(factors) != len(leaves):
            raise TypeError("zero_gradient_decay does not match the optimizer's state.")
        # per-entry leaves are owned copies; scalar ones (Adam's count) are global
        self._leaves = [np.array(leaf, copy=True) for leaf in leaves]
        self._decay = [None if f is None else float(f) for f in factors]
        self._per_entry = [np.ndim(leaf) == 1 for leaf in self._leaves]
        self.l2, self.l1 = float(l2), float(l1)
        self.unpenalized_rate = float(unpenalized_rate)
        self._p0, self._p1, _ = penalized.indices(self.size)
        self.step = int(step)
        self._last = np.full(self.size, self.step, dtype=np.int64)
        self._scale = 1.0
        self._u = 0.0
        self._q = np.zeros(self.size, dtype=np.float64) if self.l1 else None
        # averaging: settled sums, the clock each entry was settled at, the clocks
        self._sum: np.ndarray | None = None
        self._mark: np.ndarray | None = None
        self._clock_scale = 0.0  # Σ scale over the averaged steps (penalized entries)
        self._clock_steps = 0.0  # the averaged steps (unpenalized entries)
        self.n_averaged = 0
        self._recount_penalty()

    # --- reading ----------------------------------------------------------------------------

    def _penalized_mask(self, indices: np.ndarray) -> np.ndarray:
        return (indices >= self._p0) & (indices < self._p1)

    def _scales(self, mask: np.ndarray) -> np.ndarray:
        return np.where(mask, self._scale, 1.0)

    def values(self, indices: Array) -> np.ndarray:
        """``w`` at ``indices`` (a copy), with the L2 shrink applied."""
        indices = np.asarray(indices, dtype=np.int64)
        w = self._v[indices] * self._scales(self._penalized_mask(indices))
        return w.astype(self._v.dtype, copy=False)

    def _caught_up(self, indices: np.ndarray) -> list:
        k = self.step - self._last[indices]
        leaves = []
        for leaf, decay, per_entry in zip(self._leaves, self._decay, self._per_entry, strict=True):
            if not per_entry:
                leaves.append(leaf)
                continue
            gathered = leaf[indices]
            if decay != 1.0:
                gathered = (gathered * decay**k).astype(leaf.dtype, copy=False)
            leaves.append(gathered)
        return leaves

    def state(self, indices: Array) -> Any:
        """The optimizer state's leaves at ``indices``, caught up to :attr:`step`."""
        indices = np.asarray(indices, dtype=np.int64)
        return tree_unflatten(self._like, self._caught_up(indices))

    def penalty_value(self) -> float:
        """``l1·‖w‖₁ + l2·½‖w‖²`` over the penalized entries, kept up to date in O(touched)."""
        return self.l1 * self._scale * self._abs_sum + 0.5 * self.l2 * self._scale**2 * self._sq_sum

    def _recount_penalty(self) -> None:
        v = self._v[self._p0 : self._p1].astype(np.float64, copy=False)
        self._abs_sum = float(np.abs(v).sum()) if self.l1 else 0.0
        self._sq_sum = float((v * v).sum()) if self.l2 else 0.0

    def _count_penalty(self, old: np.ndarray, new: np.ndarray) -> None:
        old, new = old.astype(np.float64), new.astype(np.float64)
        if self.l1:
            self._abs_sum += float(np.abs(new).sum() - np.abs(old).sum())
        if self.l2:
            self._sq_sum += float((new * new).sum() - (old * old).sum())

    # --- the L2 scale -----------------------------------------------------------------------

    def _shrink(self, factor: float) -> bool:
        """Every penalized entry ``× factor``, O(1) but for a rare fold; whether ``v``
        changed (a fold)."""
        if factor == 1.0:
            return False
        if factor <= 0.0:
            self._fold()
            self._v[self._p0 : self._p1] = 0
            self._recount_penalty()
            return True
        self._scale *= factor
        if self._scale < RESCALE_BELOW:
            self._fold()
            return True
        return False

    def _fold(self) -> None:
        """Fold ``scale`` into the penalized values (O(size)), settling the averages first."""
        where = slice(self._p0, self._p1)
        if self._sum is not None:
            self._sum[where] += self._v[where] * (self._clock_scale - self._mark[where])
            self._mark[where] = 0.0
            self._clock_scale = 0.0
        self._v[where] *= self._scale
        self._scale = 1.0
        self._recount_penalty()

    # --- averaging --------------------------------------------------------------------------

    def start_averaging(self, average: Array | None = None, n_averaged: int = 0) -> None:
        """Average ``w`` over every later step, from a mean ``average`` of ``n_averaged``."""
        self._sum = np.zeros(self.size, dtype=np.float64)
        if average is not None and n_averaged:
            self._sum += np.asarray(average, dtype=np.float64) * n_averaged
        self._mark = np.zeros(self.size, dtype=np.float64)
        self._clock_scale = self._clock_steps = 0.0
        self.n_averaged = int(n_averaged)

    @property
    def averaging(self) -> bool:
        return self._sum is not None

    def _clocks(self, mask: np.ndarray) -> np.ndarray:
        return np.where(mask, self._clock_scale, self._clock_steps)

    def _settle(self, indices: np.ndarray, mask: np.ndarray) -> None:
        """Add the untouched steps' ``w`` to the sums at ``indices`` (before ``v`` changes)."""
        if self._sum is None:
            return
        clocks = self._clocks(mask)
        self._sum[indices] += self._v[indices] * (clocks - self._mark[indices])
        self._mark[indices] = clocks

    def _average_term(self) -> None:
        """One more term of the running mean (a step, or a local-SGD round), once averaging
        has started: the entries' sums settle against these clocks when next touched."""
        if self._sum is not None:
            self.n_averaged += 1
            self._clock_scale += self._scale
            self._clock_steps += 1.0

    def average_values(self, indices: Array | None = None) -> np.ndarray:
        """The running mean of ``w`` at ``indices`` (all entries if None)."""
        if self._sum is None or not self.n_averaged:
            raise ValueError("No step has been averaged yet.")
        if indices is None:
            indices = np.arange(self.size, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        clocks = self._clocks(self._penalized_mask(indices))
        total = self._sum[indices] + self._v[indices] * (clocks - self._mark[indices])
        return (total / self.n_averaged).astype(self._v.dtype, copy=False)

    # --- steps ------------------------------------------------------------------------------

    def apply(self, indices: Array, grad_values: Array, learning_rate: float) -> None:
        """One step with the loss gradient ``grad_values`` at ``indices`` (sorted, distinct)."""
        indices = np.asarray(indices, dtype=np.int64)
        g = np.asarray(grad_values)
        lr = float(learning_rate)
        mask = self._penalized_mask(indices)
        old = self._v[indices]
        params = (old * self._scales(mask)).astype(old.dtype, copy=False)
        if self._shrink(1.0 - lr * self.l2):
            old = self._v[indices]  # a fold or a zeroing changed v
        self._settle(indices, mask)

        state = tree_unflatten(self._like, self._caught_up(indices))
        direction, state = self.optimizer.update(g, state, params)
        for i, leaf in enumerate(tree_leaves(state)):
            if self._per_entry[i]:
                self._leaves[i][indices] = leaf
            else:
                self._leaves[i] = np.array(leaf, copy=True)
        self._last[indices] = self.step + 1

        rate = np.where(mask, lr, lr * self.unpenalized_rate)
        new = old - rate * np.asarray(direction, dtype=np.float64) / self._scales(mask)
        if self.l1:
            self._u += lr * self.l1
            new = self._truncate(indices[mask], new, mask)
        new = new.astype(self._v.dtype, copy=False)
        self._v[indices] = new
        self._count_penalty(old[mask], new[mask])
        self._average_term()
        self.step += 1

    def _truncate(self, where: np.ndarray, new: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """scikit-learn's ``l1penalty`` on the penalized entries ``where`` (``new[mask]``)."""
        z = new[mask]
        q = self._q[where]
        s = self._scale
        w = np.where(
            z > 0,
            np.maximum(0.0, z - (self._u + q) / s),
            np.where(z < 0, np.minimum(0.0, z + (self._u - q) / s), z),
        )
        self._q[where] = q + s * (w - z)
        new = new.copy()
        new[mask] = w
        return new

    def flush_l1(self) -> None:
        """Truncate every penalized entry by what it owes (O(size)) and restart ``u`` and
        ``q``: the dense parameters then carry all the L1 penalty so far."""
        if not self.l1:
            return
        where = np.arange(self._p0, self._p1, dtype=np.int64)
        mask = np.ones(where.shape[0], dtype=bool)
        self._settle(where, mask)
        old = self._v[where]
        new = self._truncate(where, old.astype(np.float64), mask).astype(self._v.dtype)
        self._v[where] = new
        self._count_penalty(old, new)
        self._u = 0.0
        self._q[:] = 0.0

    def add(
        self,
        indices: Array,
        delta: Array,
        state_delta: Any = None,
        *,
        decay: float = 1.0,
        steps: int = 0,
    ) -> None:
        """Local SGD's averaged round of ``steps`` steps, beyond what those steps do alone.

        Every penalized ``w ← decay·w`` (O(1)) and ``step += steps``: the optimizer state
        of every entry evolves as under ``steps`` zero gradients (lazily, by the catch-up
        rule) and scalar leaves (Adam's count) advance by ``steps``. Then ``w[indices] +=
        delta`` and, at ``indices``, each per-entry state leaf ``+= state_delta``'s (a
        sequence with one array per per-entry leaf, in :func:`tree_leaves`' order). No L1
        truncation. Once averaging has started, the round is one more term of the mean,
        as a dense shard's averaging round is.
        """
        indices = np.asarray(indices, dtype=np.int64)
        mask = self._penalized_mask(indices)
        self._shrink(float(decay))  # before reading v: a fold may change it
        self._settle(indices, mask)
        self.step += int(steps)
        for i, per_entry in enumerate(self._per_entry):
            if not per_entry:
                self._leaves[i] = self._leaves[i] + int(steps)
        caught_up = self._caught_up(indices)
        extras = iter(() if state_delta is None else state_delta)
        for i, per_entry in enumerate(self._per_entry):
            if per_entry:
                extra = next(extras, None)
                leaf = caught_up[i] if extra is None else caught_up[i] + extra
                self._leaves[i][indices] = leaf
        self._last[indices] = self.step
        old = self._v[indices]
        new = old + np.asarray(delta, dtype=np.float64) / self._scales(mask)
        new = new.astype(self._v.dtype, copy=False)
        self._v[indices] = new
        self._count_penalty(old[mask], new[mask])
        self._average_term()

    # --- materializing ----------------------------------------------------------------------

    def dense(self) -> tuple[np.ndarray, Any, np.ndarray | None, int]:
        """``(params, opt_state, average or None, n_averaged)``, materialized: O(size)."""
        params = self._v.copy()
        params[self._p0 : self._p1] *= self._scale
        everything = np.arange(self.size, dtype=np.int64)
        opt_state = tree_unflatten(self._like, self._caught_up(everything))
        average = self.average_values() if self._sum is not None and self.n_averaged else None
        return params, opt_state, average, self.n_averaged
