"""Penalties on the coefficients (never on the intercept): l2, l1 and elastic net."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dask_sgd._array import get_namespace

Array = Any


@dataclass(frozen=True)
class Penalty:
    """``alpha * (l1_ratio * |w|_1 + (1 - l1_ratio) * 0.5 * |w|_2^2)``, scikit-learn's form.

    The l1 part is handled by its subgradient, ``sign(w)``: coefficients get small but, unlike
    scikit-learn's truncated-gradient update, not exactly zero.
    """

    alpha: float = 0.0
    l1_ratio: float = 0.0

    def value(self, coef: Array) -> Array:
        """The penalty, as a scalar of ``coef``'s array module (no device sync on a GPU)."""
        xp = get_namespace(coef)
        parts = []  # each step computes this: skip the parts that are zero
        if self.l1_ratio:
            parts.append(self.l1_ratio * xp.sum(xp.abs(coef)))
        if self.l1_ratio != 1:
            parts.append((1 - self.l1_ratio) * 0.5 * xp.sum(coef * coef))
        return self.alpha * sum(parts[1:], parts[0])

    def grad(self, coef: Array) -> Array:
        xp = get_namespace(coef)
        if not self.l1_ratio:
            return self.alpha * coef
        return self.alpha * (self.l1_ratio * xp.sign(coef) + (1 - self.l1_ratio) * coef)


PENALTIES = ("l2", "l1", "elasticnet", None)


def get_penalty(name: str | None, *, alpha: float, l1_ratio: float = 0.15) -> Penalty:
    """Build a penalty from scikit-learn's ``penalty``, ``alpha`` and ``l1_ratio``.

    Examples
    --------
    >>> get_penalty("l1", alpha=0.01)
    Penalty(alpha=0.01, l1_ratio=1.0)
    """
    ratios = {"l2": 0.0, "l1": 1.0, "elasticnet": l1_ratio}
    if name is None:
        return Penalty(0.0, 0.0)
    if name not in ratios:
        raise ValueError(f"The penalty {name!r} is not supported.")
    return Penalty(alpha, ratios[name])
