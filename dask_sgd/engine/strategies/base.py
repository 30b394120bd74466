"""What a training strategy is: one class that says everything that differs between them.

A strategy says how many contributions a step takes, how the learning rate scales with the
number of workers, what the parameter-server shards do with a push (an exchange rule,
:mod:`dask_sgd.ps.rules`), the unit's exchange loop (run on the workers), and what it adds
to ``history_`` and the dashboard. The trainer (:mod:`dask_sgd.engine.cluster`) runs any of
them the same way and knows none by name. A new strategy is a subclass with a ``name``,
registered with :func:`register`; its fields are the estimator parameters it reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from dask_sgd.ps.rules import ExchangeRule
from dask_sgd.schedules import batch_scaling_factor

if TYPE_CHECKING:
    from dask_sgd.engine.steps import TrainState
    from dask_sgd.engine.units import SegmentPlan, ShardCalls, UnitData
    from dask_sgd.optim import GradientTransformation
    from dask_sgd.ps import ParameterServer

#: name -> strategy class; the estimators' ``strategy`` parameter takes these names
STRATEGIES: dict[str, type[Strategy]] = {}
#: the same names as a set that grows with :func:`register` (the estimators validate
#: ``strategy`` against it)
STRATEGY_NAMES: set[str] = set()


@dataclass(frozen=True)
class Carry:
    """What a unit keeps from one segment to the next: where it is in its blocks."""

    cursor: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class UnitResult:
    """What a unit reports at the end of its segment."""

    loss_sum: float  # the objective summed over the rows, before each update
    rows: int
    carry: Carry
    #: the bytes of the arrays the unit sent to shards on other workers, and got back
    bytes_pushed: int = field(default=0, kw_only=True)
    bytes_pulled: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class Strategy:
    """The base: one unit per worker, each step one push that the shards apply at once."""

    name: ClassVar[str] = ""
    #: whether the shards keep the optimizer state (False: the units do, as in local SGD)
    server_keeps_opt_state: ClassVar[bool] = True

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Strategy:
        """The strategy configured by the estimator's parameters (those it has fields for)."""
        return cls(
            **{f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options}
        )

    # --- on the client --------------------------------------------------------------------------

    def on_sparse_input(self) -> Strategy:
        """The strategy for sparse input, whose units pull and push only the parameters
        their minibatches touch; raise ``ValueError`` for a setting that cannot work so."""
        return self

    def check(self, n_units: int) -> None:
        """Raise ``ValueError`` if the strategy's settings cannot work on ``n_units`` workers
        (checked as the fit starts, before any shard exists)."""

    def contributors(self, n_units: int) -> int:
        """Minibatches of ``batch_size`` rows that one step applies: with the batch size it
        sizes the epoch, and the synchronous strategies' shards wait for this many pushes."""
        return n_units

    def rate_factor(
        self, n_contributors: int, batch_size: int, optimizer: GradientTransformation
    ) -> float:
        """The learning rate's factor for ``n_contributors`` minibatches per step (1: none)."""
        return 1.0

    def round_steps(self) -> int:
        """Steps in an exchange round: a segment is whole rounds."""
        return 1

    def calibration_steps(self) -> int | None:
        """Steps of a fit's first segment, if the strategy measures something in it that
        the rest of the fit needs (None: the segments' usual length)."""
        return None

    def paced(self, results: list[UnitResult], steps_per_epoch: int) -> Strategy:
        """The strategy for the segments after the one of ``results`` (itself, unless it
        adapts to what its units measured)."""
        return self

    def first_version(self, step: int) -> int:
        """The version that new shards start at, for a fit at ``step``."""
        return 0

    def exchange_rule(self, n_units: int, step: int) -> ExchangeRule:
        """What each shard does with a push, for ``n_units`` units from ``step`` on."""
        raise NotImplementedError

    def start_carry(self, state: TrainState) -> Carry:
        """A unit's carry when it starts from ``state`` (a new server, or a new worker)."""
        return Carry()

    def open_segment(
        self, server: ParameterServer, first_step: int, n_steps: int, n_units: int
    ) -> int:
        """Prepare the shards for a segment of ``n_steps`` steps per unit; return the steps
        that the training state advances by."""
        return n_steps

    def segment_opt_state(self, server_opt_state: Any, carries: list[Carry]) -> Any:
        """The optimizer state of the snapshot after a segment."""
        return server_opt_state

    def history(self, results: list[UnitResult], dropped: int) -> dict:
        """Fields this strategy adds to an epoch's ``history_`` record, from its units'
        results and the contributions the shards dropped."""
        return {}

    def dashboard(self, results: list[UnitResult]) -> dict:
        """Fields this strategy adds to a segment's record on the dashboard page."""
        return {}

    # --- on the worker --------------------------------------------------------------------------

    def run_unit(
        self, data: UnitData, calls: ShardCalls, plan: SegmentPlan, unit: int, carry: Carry
    ) -> UnitResult:
        """The unit's exchange loop for one segment."""
        raise NotImplementedError


class ScaledStrategy(Strategy):
    """A strategy whose step applies the mean gradient of several workers' minibatches: the
    learning rate follows the linear scaling rule (Goyal et al. 2017), or the square-root
    rule for optimizers that normalize the gradient (Adam, RMSProp, Adagrad)."""

    def rate_factor(self, n_contributors, batch_size, optimizer) -> float:
        return batch_scaling_factor(
            n_contributors * batch_size, batch_size, normalized=optimizer.normalizes
        )


def register(cls: type[Strategy]) -> type[Strategy]:
    """Make ``cls`` a strategy that the estimators' ``strategy`` parameter can name."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name.")
    STRATEGIES[cls.name] = cls
    STRATEGY_NAMES.add(cls.name)
    return cls


def get_strategy(name: str, **options: Any) -> Strategy:
    """The strategy ``name``, configured by the options it has fields for."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"Unknown strategy {name!r}; the strategies are {sorted(STRATEGIES)}."
        ) from None
    return cls.from_options(options)
