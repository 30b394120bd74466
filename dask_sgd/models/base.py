"""The protocol every model family implements, and the registry of families by name.

A model family is one subclass of :class:`Model` in one module: it names itself (``family``),
describes its flat parameter vector (``layout``), starts it (``init_params``), runs the
forward pass and the backward pass, says which parameters the penalty applies to
(``penalized``), and describes itself as plain JSON (``config`` / ``from_config``), so that a
checkpoint can save and load it without pickle. The objective, the estimators and the
checkpoints see only this protocol.

Defining the subclass registers it; :func:`model_from_config` builds a model from what
:meth:`Model.describe` wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from dask_sgd.models.layout import Layout

Array = Any

#: every model family, by its name
MODEL_FAMILIES: dict[str, type[Model]] = {}
#: the family of a checkpoint written before checkpoints named one (dask_sgd 0.1.0): its
#: "layout" entry is that family's configuration
LEGACY_FAMILY = "linear"


class Model:
    """A model family: raw outputs ``(n_samples, n_outputs)`` of a flat parameter vector θ.

    Subclasses set ``family`` (a unique name) and define :attr:`layout`,
    :meth:`init_params`, :meth:`forward`, :meth:`backward`, :attr:`penalized`,
    :meth:`config` and :meth:`from_config`. The hot path (``forward``, ``backward``) takes
    its array namespace from its arguments (:func:`dask_sgd._array.get_namespace`) and keeps
    their dtype: float32 stays float32.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_sgd.models import LinearModel, model_from_config
    >>> model = LinearModel(2)
    >>> raw, cache = model.forward(np.array([1.0, 2.0, 0.5]), np.array([[1.0, 1.0]]))
    >>> raw
    array([[3.5]])
    >>> model.describe()
    {'family': 'linear', 'config': {'n_features': 2, 'n_outputs': 1, 'fit_intercept': True}}
    >>> model_from_config(**model.describe()) == model
    True
    """

    #: the family's name, as checkpoints record it; a subclass that sets it is registered
    family: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("family")
        if name is None:
            return  # an abstract intermediate class, or a variant of a registered family
        known = MODEL_FAMILIES.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(
                f"Model family {name!r} is already registered by "
                f"{known.__module__}.{known.__qualname__}."
            )
        MODEL_FAMILIES[name] = cls  # the same class defined again (a reloaded module) replaces

    @property
    def layout(self) -> Layout:
        """The named blocks of θ."""
        raise NotImplementedError

    @property
    def penalized(self) -> tuple[slice, ...]:
        """The slices of θ that the penalty applies to (never an intercept or a bias)."""
        raise NotImplementedError

    def penalty_map(self, where: slice, theta: Array) -> tuple[Any, float]:
        """``(factor, weight)``: the penalty on ``theta[where]`` is ``weight · P(factor ·
        theta[where])``, ``factor`` a number or an array in θ's namespace and dtype.
        ``(1.0, 1.0)`` but for a model whose parameters are in other units than those the
        penalty is meant in (a standardized model's)."""
        return 1.0, 1.0

    def init_params(self, rng: Any = None, *, xp: Any = None, dtype: Any = "float64") -> Array:
        """The starting θ, of ``layout.size`` entries, in namespace ``xp`` (NumPy by default).

        ``rng`` (a :class:`numpy.random.Generator`, a seed or None) draws a random start for
        the families that need one.
        """
        raise NotImplementedError

    def forward(self, theta: Array, X: Array) -> tuple[Array, Any]:
        """``(raw, cache)``: the raw outputs and what :meth:`backward` needs from this pass."""
        raise NotImplementedError

    def backward(self, theta: Array, cache: Any, draw: Array) -> Array:
        """The flat gradient of ``sum(loss)``, of θ's dtype, given ``draw = dloss/draw``."""
        raise NotImplementedError

    def backward_pieces(
        self, theta: Array, cache: Any, draw: Array
    ) -> tuple[Array, Iterator[slice]]:
        """:meth:`backward` in the order the backward pass finishes θ's entries: ``(grad,
        pieces)``. Iterating ``pieces`` fills the buffer ``grad``; each slice of θ it yields
        is then final in ``grad``, from θ's end towards its start, and together they cover θ
        without splitting a slice of :attr:`penalized`. A synchronous unit pushes a shard's
        slice of the gradient as soon as the pieces reach its start, while it computes the
        rest (the layer-wise exchange). The default is one piece: the whole gradient."""
        grad = self.backward(theta, cache, draw)
        return grad, iter((slice(0, grad.shape[0]),))

    def raw(self, theta: Array, X: Array) -> Array:
        """Raw outputs, shape ``(n_samples, n_outputs)``, for prediction."""
        return self.forward(theta, X)[0]

    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this model: plain JSON (numbers, strings, lists)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """The model that :meth:`config` describes."""
        return cls(**config)

    def describe(self) -> dict[str, Any]:
        """``{"family": ..., "config": ...}``: what a checkpoint records of the model."""
        return {"family": self.family, "config": self.config()}


def get_model_family(name: str) -> type[Model]:
    """The registered model family called ``name``."""
    try:
        return MODEL_FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"Unknown model family {name!r}; the registered ones are "
            f"{sorted(MODEL_FAMILIES)}. Import the module that defines it first."
        ) from None


def model_from_config(family: str, config: dict[str, Any]) -> Model:
    """The model of family ``family`` that ``config`` describes (see :meth:`Model.describe`)."""
    return get_model_family(family).from_config(config)
