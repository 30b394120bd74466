"""The parameter server: shard actors holding θ in contiguous slices."""

from __future__ import annotations

from dask_sgd.ps.rules import Averaging, Clocked, ExchangeRule, Immediate, MeanGradientStep
from dask_sgd.ps.server import ParameterServer, shard_ranges
from dask_sgd.ps.shard import ParameterShard

__all__ = [
    "Averaging",
    "Clocked",
    "ExchangeRule",
    "Immediate",
    "MeanGradientStep",
    "ParameterServer",
    "ParameterShard",
    "shard_ranges",
]
