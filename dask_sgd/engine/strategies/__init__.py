"""Training strategies on Dask: one class each (see :mod:`.base`), registered by name."""

from __future__ import annotations

from dask_sgd.engine.strategies.backup import Backup
from dask_sgd.engine.strategies.base import (
    STRATEGIES,
    STRATEGY_NAMES,
    Carry,
    Strategy,
    UnitResult,
    get_strategy,
    register,
)
from dask_sgd.engine.strategies.downpour import Downpour
from dask_sgd.engine.strategies.local import Local
from dask_sgd.engine.strategies.ssp import SSP
from dask_sgd.engine.strategies.sync import Sync

__all__ = [
    "SSP",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Backup",
    "Carry",
    "Downpour",
    "Local",
    "Strategy",
    "Sync",
    "UnitResult",
    "get_strategy",
    "register",
]
