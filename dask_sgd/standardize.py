"""Standardizing on the fly: column moments from the blocks, and the change of variables.

On Dask input, the "auto" settings train a linear model in standardized coordinates,
``x̃ = (x − mean) / std`` (and, for regression, ``ỹ = (y − center) / scale``), without
copying a block: the model folds the transform into its weights
(:class:`dask_sgd.models.StandardizedLinearModel`). The objective stays scikit-learn's, in
the original units, penalty included; the change of variables is a preconditioner, which
makes columns of scales 1e-2 and 1e2, offsets of hundreds and a target in the hundreds as
easy to train as standard normal ones. The moments come from the pass that already checks
every block for non-finite values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar

from dask_sgd._array import astype, get_namespace, is_host, to_host

#: rows per piece when a block's moments are taken: a piece of 100 float64 columns stays in
#: a core's L2 cache between its reads (1.6 times as fast as 8192 rows on W1's blocks)
MOMENT_ROWS = 2048


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations of each column (Chan et al.'s pairwise
    update combines them without cancellation, whatever the offsets)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of a 2-D array's columns, in float64, piece by piece.

        Examples
        --------
        >>> m = Moments.of(np.array([[1.0, 10.0], [3.0, 10.0]]))
        >>> m.n, m.mean.tolist(), m.std.tolist()
        (2, [2.0, 10.0], [1.0, 0.0])
        """
        if not is_host(values):  # a device block: its sums on its device, in one piece
            return cls._of_device_array(values)
        total = cls(0, np.zeros(values.shape[1]), np.zeros(values.shape[1]))
        # one buffer for every piece: in a Dask worker (MALLOC_TRIM_THRESHOLD_ set) every
        # large temporary is fresh memory, and its page faults cost as much as the sums
        buffer = np.empty((min(MOMENT_ROWS, values.shape[0]), values.shape[1]))
        converted = None if values.dtype == np.float64 else np.empty_like(buffer)
        ones = np.ones(buffer.shape[0])  # column sums as matrix products: one read each
        with np.errstate(all="ignore"):  # NaN, infinity and overflow give non-finite sums
            for start in range(0, values.shape[0], MOMENT_ROWS):
                piece = values[start : start + MOMENT_ROWS]
                if converted is not None:  # in float64
                    converted[: piece.shape[0]] = piece
                    piece = converted[: piece.shape[0]]
                n = piece.shape[0]
                mean = (ones[:n] @ piece) / n
                deviations = buffer[:n]
                np.subtract(piece, mean, out=deviations)
                m2 = ones[:n] @ np.square(deviations, out=deviations)
                total = total.combine(cls(n, mean, m2))
        return total

    @classmethod
    def _of_device_array(cls, values: Any) -> Moments:
        """:meth:`of` a device array (CuPy's, or another array-API library's), in float64
        on its device (one float64 copy of it there); the moments come back to host."""
        xp = get_namespace(values)
        n = values.shape[0]
        if not n:
            return cls(0, np.zeros(values.shape[1]), np.zeros(values.shape[1]))
        with np.errstate(all="ignore"):  # non-finite values give non-finite sums, as on host
            wide = astype(values, xp.float64)
            mean = xp.mean(wide, axis=0)
            deviations = wide - mean
            m2 = xp.sum(deviations * deviations, axis=0)
        return cls(n, to_host(mean), to_host(m2))

    def combine(self, other: Moments) -> Moments:
        if not other.n:
            return self
        if not self.n:
            return other
        n = self.n + other.n
        with np.errstate(all="ignore"):
            delta = other.mean - self.mean
            mean = self.mean + delta * (other.n / n)
            m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return Moments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


def total_moments(moments: list[Moments]) -> Moments:
    total = moments[0]
    for more in moments[1:]:
        total = total.combine(more)
    return total


def scale_of(std: np.ndarray) -> np.ndarray:
    """Standard deviations to divide by: a constant column keeps its scale (as
    scikit-learn's ``StandardScaler`` does), so that nothing is divided by zero; so does a
    column whose squares overflow (training then refuses its overflowing gradient)."""
    std = np.asarray(std, dtype=np.float64)
    usable = np.isfinite(std) & (std > 0)
    tiny = 1e-12 * np.abs(std[usable]).max(initial=1.0)
    return np.where(usable & (std > tiny), std, 1.0)


class DataMoments(NamedTuple):
    """The moments of the training data's columns, and of a regression's target."""

    features: Moments
    target: Moments | None = None


#: the regression losses that are quadratic in the target's scale: dividing the target by
#: ``s`` divides the loss by ``s²`` (and the Huber loss's ``epsilon`` by ``s``), so their
#: target is standardized too; the others' is only centred
SCALED_LOSSES = frozenset({"squared_error", "huber", "squared_epsilon_insensitive"})


def standardized_model(model: Any, moments: DataMoments, *, target_scaled: bool) -> Any:
    """``model`` (a :class:`~dask_sgd.models.LinearModel`) in the coordinates of
    standardized columns and target. Without an intercept nothing is centred, since the
    model could not absorb the shift."""
    from dask_sgd.models import StandardizedLinearModel

    center = model.fit_intercept
    features, target = moments
    mean = np.where(np.isfinite(features.mean) & center, features.mean, 0.0)
    target_center, target_scale = 0.0, 1.0
    if target is not None:
        if center and np.isfinite(target.mean[0]):
            target_center = float(target.mean[0])
        if target_scaled:
            target_scale = float(scale_of(target.std)[0])
    return StandardizedLinearModel(
        model.n_features,
        model.n_outputs,
        model.fit_intercept,
        mean=mean,
        std=scale_of(features.std),
        target_center=target_center,
        target_scale=target_scale,
    )


def start_intercepts(loss: Any, class_weights: np.ndarray, *, multinomial: bool) -> np.ndarray:
    """The intercepts of the best model without features, given each class's total weight
    (one output for two classes, else one per class, one-vs-rest or ``multinomial``).

    For the log loss these are the log-odds of the classes' frequencies; for another loss,
    the minimum of ``p · L(+1, b) + (1 − p) · L(−1, b)`` over ``b``.

    Examples
    --------
    >>> from dask_sgd.losses import get_loss
    >>> start_intercepts(get_loss("log_loss"), np.array([3.0, 1.0]), multinomial=False).round(4)
    array([-1.0986])
    """
    shares = np.asarray(class_weights, dtype=np.float64) / np.sum(class_weights)
    if multinomial:
        return np.log(np.maximum(shares, 1e-12))
    positives = shares[1:] if len(shares) == 2 else shares
    starts = []
    for p in positives:

        def expected_loss(b: float, p: float = p) -> float:
            raw = np.full((1, 1), b)
            up, down = loss.loss(np.ones((1, 1)), raw), loss.loss(-np.ones((1, 1)), raw)
            return float(p * up.sum() + (1 - p) * down.sum())

        found = minimize_scalar(expected_loss, bounds=(-30.0, 30.0), method="bounded")
        starts.append(found.x)
    return np.array(starts)
