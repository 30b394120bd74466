"""Lazily regularized parameters: a sparse step costs O(touched entries), not O(size).

:class:`LazyParams` holds a slice of a linear model's flat θ (all of it in process, a shard's
slice on the parameter server) with its optimizer's state. A step
``apply(indices, g, lr)`` at step ``t`` with the loss gradient ``g`` at ``indices`` is:

1. **L2** (``l2 = alpha·(1 − l1_ratio)``): every penalized entry shrinks,
   ``w ← (1 − lr·l2)·w``. As in scikit-learn, ``w = scale·v`` and the shrink is an O(1)
   update of ``scale``; when ``scale`` falls below 1e-9 it is folded into ``v`` (O(size),
   rare). A factor ``≤ 0`` sets every penalized entry to zero, as scikit-learn's
   ``max(0, 1 − η·α·(1 − ρ))``.

   With an optimizer that puts a factor ``p`` of its own on each entry's gradient, one
   that stays the same while the entry is untouched (Adagrad's ``1 / (√G + eps)``:
   ``penalty_scaling``), the shrink passes through it as the penalty's gradient would:
   ``w ← (1 − lr·l2)^p·w`` (``preconditioned``). Without it, the penalty would weigh on a
   rare column's coefficient a thousand times less than its loss gradient, which Adagrad
   scales up, and a fit would drift from the objective's optimum with every epoch. An
   entry is then ``v·exp(p·(log − log_at))``: ``log`` sums the steps' ``log(1 − lr·l2)``
   in O(1), ``log_at`` is its value at the entry's last change (one more array).
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
``v·(C − C_last)`` when it is touched (unpenalized entries use the count of steps). Where
``preconditioned``, the log at each averaged term is kept and an entry's terms between
two touches are a geometric series through the first and the last: exact at a constant
learning rate (the Dask default), an interpolation where it changes (within 1 % in the
tests, at rates falling sixfold).

**What changed** (:meth:`LazyParams.changes`): the entries touched since the last call, at
each per-entry array, and every scalar, so that a copy taken then is brought up to date in
O(touched) (:meth:`LazyParams.apply_changes`): a shard's snapshots and their replica on
another worker follow it so. A new running mean is one flag (the copy starts its own); an
O(size) change (a fold, a mean resumed from a snapshot's) sends a whole copy instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from dask_sgd._tree import tree_leaves, tree_unflatten
from dask_sgd.optim import GradientTransformation

Array = Any

#: fold ``scale`` into the values below this, as scikit-learn's WeightVector does
RESCALE_BELOW = 1e-9
#: the largest power of the shrink (Adagrad's ``1/eps`` is infinite with ``eps=0``): finite,
#: so that an entry no shrink has reached yet (a log of 0) keeps a factor of 1
MAX_EXPONENT = 1e300

#: :meth:`LazyParams.dense` materializes this many entries at a time
DENSE_CHUNK = 1 << 20
#: :meth:`LazyParams.final_penalty` reads this many entries at a time (its temporaries stay
#: in the cache)
PENALTY_CHUNK = 1 << 15

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


def shrink_factors(optimizer: GradientTransformation, state: Any, factor: float) -> Any:
    """What an L2 shrink by ``factor`` (one step's, or the product over a round's) makes of
    each untouched entry whose optimizer state is ``state``: ``factor`` to the power of
    the optimizer's factor on the entry (Adagrad's ``1 / (√G + eps)``), else ``factor``.

    Examples
    --------
    >>> from dask_sgd.optim import AdagradState, adagrad, sgd
    >>> shrink_factors(sgd(), (), 0.5)
    0.5
    >>> shrink_factors(adagrad(eps=0.0), AdagradState(np.array([1.0, 4.0])), 0.25)
    array([0.25, 0.5 ])
    """
    p = optimizer.penalty_scaling(state)
    if p is None or factor <= 0.0 or factor == 1.0:
        return max(factor, 0.0)
    return _powers(np.asarray(p, dtype=np.float64), np.full(np.shape(p), np.log(factor)))


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
        # int32: a shard's memory is a few of its arrays; 2^31 steps is beyond any fit
        self._last = np.full(self.size, self.step, dtype=np.int32)
        self._scale = 1.0
        # the L2 shrink through the optimizer's per-entry factor p (Adagrad's): an entry is
        # v·exp(p·(log − log_at)), log the sum of the steps' log factors, log_at its value at
        # the entry's last change; the averaged terms' logs (see :meth:`_gap_sums`)
        self._log = 0.0
        self._term_log = np.empty(0)
        self._log_at: np.ndarray | None = None
        self._u = 0.0
        self._q = np.zeros(self.size, dtype=np.float64) if self.l1 else None
        # averaging: settled sums, the clock each entry was settled at, the clocks
        self._sum: np.ndarray | None = None
        self._mark: np.ndarray | None = None
        self._clock_scale = 0.0  # Σ scale over the averaged steps (penalized entries)
        self._clock_steps = 0.0  # the averaged steps (unpenalized entries)
        self.n_averaged = 0
        self._recount_penalty()
        self.preconditioned = bool(self.l2) and self._exponents(np.empty(0, np.int64)) is not None
        if self.preconditioned:
            self._log_at = np.zeros(self.size, dtype=np.float64)
        # the entries changed since the last ``changes()``; every entry until the first
        self._touched = np.zeros(self.size, dtype=bool)
        self._everything = True
        self._new_average = False  # a new mean started since
        self._undo: list[UndoLog] = []  # what each interval since a kept ``changes()`` changed

    # --- reading ----------------------------------------------------------------------------

    def _penalized_mask(self, indices: np.ndarray) -> np.ndarray:
        return (indices >= self._p0) & (indices < self._p1)

    def _exponents(self, indices: np.ndarray, leaves: list | None = None) -> np.ndarray | None:
        """The optimizer's per-entry factor ``p`` at ``indices`` (None: 1 for every entry),
        from the caught-up state ``leaves`` there if already read."""
        leaves = self._caught_up(indices) if leaves is None else leaves
        p = self.optimizer.penalty_scaling(tree_unflatten(self._like, leaves))
        return None if p is None else np.minimum(np.asarray(p, dtype=np.float64), MAX_EXPONENT)

    def _factors(
        self, indices: np.ndarray, mask: np.ndarray, p: np.ndarray | None = None
    ) -> np.ndarray:
        """``w / v`` at ``indices``: the L2 shrink since each entry last changed (``p``: the
        exponents there, if already read)."""
        if not self.preconditioned:
            return np.where(mask, self._scale, 1.0)
        p = self._exponents(indices) if p is None else p
        return np.where(mask, _powers(p, self._log - self._log_at[indices]), 1.0)

    def finite(self, indices: Array) -> bool:
        """Whether ``w`` is finite at ``indices`` (its factor on ``v`` is: O(1) an entry)."""
        return bool(np.isfinite(self._v[np.asarray(indices, dtype=np.int64)]).all())

    def values(self, indices: Array) -> np.ndarray:
        """``w`` at ``indices`` (a copy), with the L2 shrink applied."""
        indices = np.asarray(indices, dtype=np.int64)
        w = self._v[indices] * self._factors(indices, self._penalized_mask(indices))
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
        """``l1·‖w‖₁ + l2·½‖w‖²`` over the penalized entries, kept up to date in O(touched);
        with the shrink through the optimizer's factor (``preconditioned``), each entry as
        it was when it last changed (its shrink since is left out: O(size) to count)."""
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
            if self.preconditioned:
                self._save_whole()
                self._settle_all()
                self._log_at[self._p0 : self._p1] = self._log
            else:
                self._fold()
            self._v[self._p0 : self._p1] = 0
            self._recount_penalty()
            self._everything = True
            return True
        if self.preconditioned:
            self._log += float(np.log(factor))
            return False
        self._scale *= factor
        if self._scale < RESCALE_BELOW:
            self._fold()
            return True
        return False

    def _fold(self) -> None:
        """Fold ``scale`` into the penalized values (O(size)), settling the averages first."""
        self._save_whole()
        where = slice(self._p0, self._p1)
        if self._sum is not None:
            self._sum[where] += self._v[where] * (self._clock_scale - self._mark[where])
            self._mark[where] = 0.0
            self._clock_scale = 0.0
        self._v[where] *= self._scale
        self._scale = 1.0
        self._recount_penalty()
        self._everything = True

    # --- averaging --------------------------------------------------------------------------

    def start_averaging(self, average: Array | None = None, n_averaged: int = 0) -> None:
        """Average ``w`` over every later step, from a mean ``average`` of ``n_averaged``."""
        if n_averaged:
            self._save_whole()
        elif self._undo and self._undo[-1].whole is None and self._undo[-1].average is None:
            log = self._undo[-1]
            if self.preconditioned:  # settling them needs the terms' logs: they stay as are
                log.average_reset(self._sum, self._clock_scale, self._clock_steps, self._mark)
            else:  # the old sums stay, settled against the clocks (the marks are the clocks)
                log.average_reset(self._settled_sums(), self._clock_scale, self._clock_steps)
        self._sum = np.zeros(self.size, dtype=np.float64)
        if average is not None and n_averaged:
            self._sum += np.asarray(average, dtype=np.float64) * n_averaged
        self._mark = np.zeros(self.size, dtype=np.float64)
        self._clock_scale = self._clock_steps = 0.0
        self._term_log = np.empty(0)
        self.n_averaged = int(n_averaged)
        if self.n_averaged:
            self._everything = True
        else:  # a copy starts a new mean as cheaply: it needs no entry
            self._new_average = True

    def _settled_sums(self) -> np.ndarray | None:
        """The sums (the running mean's, about to be replaced) settled in place against the
        clocks now, in chunks: every entry's mark is then the clock of its kind, and the
        marks need not be kept (what :meth:`_clock_marks` makes again). Not where
        ``preconditioned`` (see :class:`UndoLog`)."""
        if self._sum is None:
            return None
        for start in range(0, self.size, DENSE_CHUNK):
            where = slice(start, min(start + DENSE_CHUNK, self.size))
            marks = self._clock_marks(self._clock_scale, self._clock_steps, where)
            marks -= self._mark[where]
            marks *= self._v[where]
            self._sum[where] += marks
        return self._sum

    def _clock_marks(self, clock_scale: float, clock_steps: float, where: slice) -> np.ndarray:
        """The marks of the entries in ``where`` settled at these clocks: ``clock_scale`` for
        the penalized ones (``clock_steps`` where ``preconditioned``), ``clock_steps`` for the
        others."""
        marks = np.full(where.stop - where.start, clock_steps)
        first, last = max(self._p0, where.start), min(self._p1, where.stop)
        if first < last and not self.preconditioned:
            marks[first - where.start : last - where.start] = clock_scale
        return marks

    @property
    def averaging(self) -> bool:
        return self._sum is not None

    def _clocks(self, mask: np.ndarray) -> np.ndarray:
        if self.preconditioned:
            return np.full(mask.shape, self._clock_steps)
        return np.where(mask, self._clock_scale, self._clock_steps)

    def _gap_sums(
        self, indices: np.ndarray, mask: np.ndarray, p: np.ndarray | None = None
    ) -> np.ndarray:
        """The sums of ``w`` at ``indices`` over the averaged terms since each entry's mark.

        Where ``preconditioned``, a penalized entry is ``v·exp(p·(L_m − log_at))`` at term
        m, with ``L_m`` the log of the shrink then: a geometric series from the gap's first
        term to its last, exact where the log falls by the same amount at every term of the
        gap (a constant learning rate) and otherwise a geometric interpolation of it."""
        clocks = self._clocks(mask)
        gaps = clocks - self._mark[indices]
        sums = self._v[indices] * gaps
        if not self.preconditioned:
            return sums
        where = np.flatnonzero(mask & (sums != 0))  # a zero entry's terms are zero
        if not where.size:
            return sums
        at, n = indices[where], gaps[where]
        p = self._exponents(at) if p is None else p[where]
        first = self._term_log[(self._clock_steps - n).astype(np.int64)]
        last = self._term_log[int(self._clock_steps) - 1]
        with np.errstate(invalid="ignore", divide="ignore", under="ignore"):
            step = p * (last - first) / np.maximum(n - 1.0, 1.0)  # the log's fall per term
            series = np.where(step < 0, np.expm1(n * step) / np.expm1(step), n)
        sums[where] *= _powers(p, first - self._log_at[at]) * series / n
        return sums

    def _settle(self, indices: np.ndarray, mask: np.ndarray, p: np.ndarray | None = None) -> None:
        """Add the untouched steps' ``w`` to the sums at ``indices`` (before ``v`` changes)."""
        if self._sum is None:
            return
        self._sum[indices] += self._gap_sums(indices, mask, p)
        self._mark[indices] = self._clocks(mask)

    def _settle_all(self) -> None:
        for start in range(0, self.size, DENSE_CHUNK):
            chunk = np.arange(start, min(start + DENSE_CHUNK, self.size), dtype=np.int64)
            self._settle(chunk, self._penalized_mask(chunk))

    def _average_term(self) -> None:
        """One more term of the running mean (a step, or a local-SGD round), once averaging
        has started: the entries' sums settle against these clocks when next touched."""
        if self._sum is not None:
            self.n_averaged += 1
            self._clock_scale += self._scale
            self._clock_steps += 1.0
            if self.preconditioned:  # the first clock_steps entries are the terms'
                n = int(self._clock_steps)
                if n > self._term_log.size:  # a new array (a view of the state keeps the old)
                    self._term_log = np.concatenate([self._term_log, np.empty(max(n, 16))])
                self._term_log[n - 1] = self._log

    def average_values(self, indices: Array | None = None) -> np.ndarray:
        """The running mean of ``w`` at ``indices`` (all entries if None)."""
        if self._sum is None or not self.n_averaged:
            raise ValueError("No step has been averaged yet.")
        if indices is None:
            indices = np.arange(self.size, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        total = self._sum[indices] + self._gap_sums(indices, self._penalized_mask(indices))
        return (total / self.n_averaged).astype(self._v.dtype, copy=False)

    def final_values(self, indices: Array) -> np.ndarray:
        """The final parameters at ``indices``: the running mean once a step is averaged,
        else ``w``."""
        return self.average_values(indices) if self.n_averaged else self.values(indices)

    def final_penalty(self) -> float:
        """The penalty (as :meth:`penalty_value`) of the final parameters: O(1) for ``w``
        but where ``preconditioned``; for the running mean, or there, one pass over the
        penalized entries."""
        if not self.n_averaged and not self.preconditioned:
            return self.penalty_value()
        l1 = l2 = 0.0
        for start in range(self._p0, self._p1, PENALTY_CHUNK):
            if self.preconditioned:
                chunk = np.arange(start, min(start + PENALTY_CHUNK, self._p1), dtype=np.int64)
                mean = self.final_values(chunk).astype(np.float64)
            else:  # each entry's clock: scale
                where = slice(start, min(start + PENALTY_CHUNK, self._p1))
                mean = self._v[where] * (self._clock_scale - self._mark[where])
                mean += self._sum[where]
                mean /= self.n_averaged
            l1 += float(np.abs(mean).sum()) if self.l1 else 0.0
            l2 += float(np.dot(mean, mean))
        return self.l1 * l1 + 0.5 * self.l2 * l2

    # --- steps ------------------------------------------------------------------------------

    def apply(self, indices: Array, grad_values: Array, learning_rate: float) -> None:
        """One step with the loss gradient ``grad_values`` at ``indices`` (sorted, distinct)."""
        indices = np.asarray(indices, dtype=np.int64)
        self._save_first_touches(indices)
        g = np.asarray(grad_values)
        lr = float(learning_rate)
        mask = self._penalized_mask(indices)
        old = self._v[indices]
        leaves = self._caught_up(indices)
        p = self._exponents(indices, leaves) if self.preconditioned else None  # before the step
        params = (old * self._factors(indices, mask, p)).astype(old.dtype, copy=False)
        if self._shrink(1.0 - lr * self.l2):
            old = self._v[indices]  # a fold or a zeroing changed v
        self._settle(indices, mask, p)

        state = tree_unflatten(self._like, leaves)
        direction, state = self.optimizer.update(g, state, params)
        for i, leaf in enumerate(tree_leaves(state)):
            if self._per_entry[i]:
                self._leaves[i][indices] = leaf
            else:
                self._leaves[i] = np.array(leaf, copy=True)
        self._last[indices] = self.step + 1

        rate = np.where(mask, lr, lr * self.unpenalized_rate)
        new = self._moved(indices, mask, p, old, -rate * np.asarray(direction, dtype=np.float64))
        if self.l1:
            self._u += lr * self.l1
            new = self._truncate(indices[mask], new, mask)
        new = new.astype(self._v.dtype, copy=False)
        self._v[indices] = new
        self._touched[indices] = True
        self._count_penalty(old[mask], new[mask])
        self._average_term()
        self.step += 1

    def _moved(self, indices, mask, p, old: np.ndarray, change: np.ndarray) -> np.ndarray:
        """The new ``v`` at ``indices`` of ``w + change``, ``w`` shrunk up to now (``p``: the
        exponents before the step), in float64; where ``preconditioned``, the entries'
        ``log_at`` become the log now."""
        if not self.preconditioned:
            return old + change / self._factors(indices, mask)
        new = old * self._factors(indices, mask, p) + change
        self._log_at[indices] = self._log
        return new

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
        self._save_whole()
        where = np.arange(self._p0, self._p1, dtype=np.int64)
        mask = np.ones(where.shape[0], dtype=bool)
        self._settle(where, mask)
        old = self._v[where]
        current = self._moved(where, mask, None, old.astype(np.float64), 0.0)  # w, shrunk
        new = self._truncate(where, current, mask).astype(self._v.dtype)
        self._v[where] = new
        self._count_penalty(old, new)
        self._u = 0.0
        self._q[:] = 0.0
        self._everything = True

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
        self._save_first_touches(indices)
        mask = self._penalized_mask(indices)
        p = self._exponents(indices) if self.preconditioned else None  # before the update
        self._shrink(float(decay))  # before reading v: a fold may change it
        self._settle(indices, mask, p)
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
        new = self._moved(indices, mask, p, old, np.asarray(delta, dtype=np.float64))
        new = new.astype(self._v.dtype, copy=False)
        self._v[indices] = new
        self._touched[indices] = True
        self._count_penalty(old[mask], new[mask])
        self._average_term()

    # --- materializing ----------------------------------------------------------------------

    def dense(self) -> tuple[np.ndarray, Any, np.ndarray | None, int]:
        """``(params, opt_state, average or None, n_averaged)``, materialized: O(size), in
        chunks of ``DENSE_CHUNK`` entries (the catch-up's and the average's temporaries are
        a chunk's, not the size's)."""
        params = self._v.copy()
        if not self.preconditioned:
            params[self._p0 : self._p1] *= self._scale
        leaves = [np.empty_like(leaf) if per_entry else leaf
                  for leaf, per_entry in zip(self._leaves, self._per_entry, strict=True)]  # fmt: skip
        averaged = self._sum is not None and self.n_averaged
        average = np.empty_like(self._v) if averaged else None
        for start in range(0, self.size, DENSE_CHUNK):
            where = slice(start, min(start + DENSE_CHUNK, self.size))
            chunk = np.arange(where.start, where.stop, dtype=np.int64)
            for i, caught_up in enumerate(self._caught_up(chunk)):
                if self._per_entry[i]:
                    leaves[i][where] = caught_up
            if self.preconditioned:
                params[where] = self.values(chunk)
            if averaged:
                average[where] = self.average_values(chunk)
        return params, tree_unflatten(self._like, leaves), average, self.n_averaged

    # --- what changed -----------------------------------------------------------------------

    #: the per-entry arrays besides the optimizer state's leaves, and the scalars
    _ENTRY_ARRAYS = ("_v", "_last", "_q", "_sum", "_mark", "_log_at")
    _SCALARS = ("_scale", "_u", "step", "_clock_scale", "_clock_steps", "n_averaged",
                "_abs_sum", "_sq_sum", "_log", "_term_log")  # fmt: skip

    def changes(self, tag: int = 0) -> LazyChanges | None:
        """What changed since the last call: the touched entries of every per-entry array
        and every scalar (O(touched)), which bring a copy taken at the last call up to date
        (:meth:`apply_changes`); None after an O(size) change and at the first call (a copy
        needs the whole state then, :meth:`copy`). From now on, what the entries held is
        kept as they change, in an undo log tagged ``tag``, until :meth:`forget_undo`."""
        new_average, self._new_average = self._new_average, False
        self._undo.append(UndoLog(tag, self._scalars(), self._scalar_leaves()))
        if self._everything:
            self._everything = False
            self._touched[:] = False
            return None
        indices = np.flatnonzero(self._touched)
        self._touched[indices] = False
        return LazyChanges(
            new_average,
            indices,
            tuple(None if array is None else array[indices] for array in self.arrays()),
            self._scalars(),
            self._scalar_leaves(),
        )

    def _scalars(self) -> dict:
        scalars = {name: getattr(self, name) for name in self._SCALARS}
        scalars["_term_log"] = self._term_log[: int(self._clock_steps)].copy()  # it grows in place
        return scalars

    def _scalar_leaves(self) -> tuple:
        return tuple(np.array(leaf, copy=True) for leaf, per_entry
                     in zip(self._leaves, self._per_entry, strict=True) if not per_entry)  # fmt: skip

    def _save_first_touches(self, indices: np.ndarray) -> None:
        """Keep what the entries at ``indices`` that this interval has not yet changed hold
        (before a step changes them), for :meth:`rolled_back`."""
        if self._undo and self._undo[-1].whole is None:
            fresh = indices[~self._touched[indices]]
            if fresh.size:
                self._undo[-1].save(fresh, self.arrays())

    def _save_whole(self) -> None:
        """Keep the whole state (before an O(size) change), for :meth:`rolled_back`."""
        if self._undo and self._undo[-1].whole is None:
            self._undo[-1].whole = self.copy()

    def forget_undo(self, before: int) -> None:
        """Drop the undo logs tagged before ``before``: no roll-back goes past it."""
        self._undo = [log for log in self._undo if log.tag >= before]

    def unchanged_since(self, tag: int) -> bool:
        """Whether nothing changed since the call of :meth:`changes` tagged ``tag``."""
        logs = [log for log in self._undo if log.tag >= tag]
        return bool(logs) and all(log.empty for log in logs)

    def rolled_back(self, tag: int) -> LazyParams:
        """A copy of the state at the call of :meth:`changes` tagged ``tag`` (O(size))."""
        logs = [log for log in self._undo if log.tag >= tag]
        if not logs or logs[0].tag != tag:
            raise ValueError(f"No undo log reaches back to {tag}.")
        twin = self.copy()
        for log in reversed(logs):
            twin = log.undo(twin)
        return twin

    def apply_changes(self, changes: LazyChanges) -> None:
        """Bring this copy up to date with ``changes`` (of the parameters it was copied from,
        since it was copied or last brought up to date)."""
        if changes.new_average:  # then the touched entries' sums and marks, since
            self.start_averaging()
            self._new_average = False
        for array, values in zip(self.arrays(), changes.arrays, strict=True):
            if array is not None:
                array[changes.indices] = values
        self._set_scalars(changes.scalars, changes.scalar_leaves)

    def _set_scalars(self, scalars: dict, scalar_leaves: tuple) -> None:
        """The scalars and scalar state leaves (Adam's count) of another time."""
        for name, value in scalars.items():
            setattr(self, name, value)
        leaves = iter(scalar_leaves)
        for i, per_entry in enumerate(self._per_entry):
            if not per_entry:
                self._leaves[i] = next(leaves)

    def arrays(self) -> list:
        """The per-entry arrays (None for one not kept), in the order of ``LazyChanges``."""
        return [getattr(self, name) for name in self._ENTRY_ARRAYS] + [
            leaf for leaf, per_entry in zip(self._leaves, self._per_entry, strict=True)
            if per_entry
        ]  # fmt: skip

    def view(self) -> LazyParams:
        """A view of this state that shares its arrays (to send, or to materialize, before
        they change): no undo logs, no record of changed entries."""
        twin = copy.copy(self)
        twin._touched, twin._undo = None, []
        return twin

    def copy(self) -> LazyParams:
        """An independent copy (O(size)): its arrays are its own, and it has no changes."""
        twin = copy.copy(self)
        for name in self._ENTRY_ARRAYS:
            array = getattr(self, name)
            setattr(twin, name, None if array is None else array.copy())
        twin._leaves = [leaf.copy() for leaf in self._leaves]
        twin._term_log = self._term_log.copy()
        twin._touched = np.zeros(self.size, dtype=bool)
        twin._everything = twin._new_average = False
        twin._undo = []
        return twin


@dataclass(frozen=True)
class LazyChanges:
    """What changed in a :class:`LazyParams` between two calls of its ``changes``: whether
    a new running mean started (its sums and marks all zero then), each per-entry array's
    values at ``indices`` (None for an array it does not keep) and every scalar."""

    new_average: bool
    indices: np.ndarray
    arrays: tuple
    scalars: dict
    scalar_leaves: tuple

    @property
    def nbytes(self) -> int:
        return self.indices.nbytes + sum(a.nbytes for a in self.arrays if a is not None)


class UndoLog:
    """What a :class:`LazyParams` held at the start of an interval (one call of ``changes``
    to the next) where it has changed since: the scalars then, each changed entry's values
    then (kept when first touched), and, after an O(size) change, the whole state just
    before it (``whole``: the entries first touched later need no saving then). A new
    running mean keeps the old sums (they are replaced, not changed), settled against the
    clocks then, so that the marks are those clocks and need no array: the entries saved
    after it skip their sums and marks. A state rolled back across a new mean holds the
    same means as before it, to rounding (each untouched entry's sum and mark differ).
    Where the shrink passes through the optimizer's factor (``preconditioned``), settling
    would need the logs of terms that a roll-back drops: the old sums and marks are kept
    as they are, and the roll-back is exact."""

    #: the positions of the average's sum and mark in ``LazyParams.arrays()``
    AVERAGE_COLUMNS = (
        LazyParams._ENTRY_ARRAYS.index("_sum"),
        LazyParams._ENTRY_ARRAYS.index("_mark"),
    )

    def __init__(self, tag: int, scalars: dict, scalar_leaves: tuple) -> None:
        self.tag, self.scalars, self.scalar_leaves = tag, scalars, scalar_leaves
        self.saved: list[tuple[np.ndarray, list]] = []
        self.whole: LazyParams | None = None
        self.average: tuple | None = None  # the settled sums and the clocks before a new mean
        self.saved_before_average = 0

    @property
    def empty(self) -> bool:
        return not self.saved and self.whole is None and self.average is None

    def save(self, indices: np.ndarray, arrays: list) -> None:
        self.saved.append((indices, [None if a is None else a[indices] for a in arrays]))

    def average_reset(
        self,
        sums: np.ndarray | None,
        clock_scale: float,
        clock_steps: float,
        marks: np.ndarray | None = None,
    ) -> None:
        """The old mean's sums, and its marks (None: the sums are settled at the clocks)."""
        self.average = (sums, clock_scale, clock_steps, marks)
        self.saved_before_average = len(self.saved)

    def undo(self, twin: LazyParams) -> LazyParams:
        """``twin`` (the state at the interval's end, owned) back at its start."""
        if self.whole is not None:
            twin = self.whole.copy()
        if self.average is not None:
            sums, clock_scale, clock_steps, marks = self.average
            twin._sum = None if sums is None else sums.copy()
            whole = slice(0, twin.size)
            if sums is None:
                twin._mark = None
            elif marks is not None:
                twin._mark = marks.copy()
            else:
                twin._mark = twin._clock_marks(clock_scale, clock_steps, whole)
        for n, (indices, values) in enumerate(self.saved):
            after_reset = self.average is not None and n >= self.saved_before_average
            for column, (array, old) in enumerate(zip(twin.arrays(), values, strict=True)):
                if array is None or old is None:
                    continue
                if after_reset and column in self.AVERAGE_COLUMNS:
                    continue
                array[indices] = old
        twin._set_scalars(self.scalars, self.scalar_leaves)
        return twin


def _powers(p: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """``exp(p·logs)``, for ``logs ≤ 0`` and ``p`` finite (:data:`MAX_EXPONENT`)."""
    with np.errstate(under="ignore"):
        return np.exp(p * logs)
