"""The parameter server as the client sees it: shard actors spread over the workers."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from dask_sgd.optim import GradientTransformation
from dask_sgd.ps.shard import ParameterShard

Array = Any


def shard_ranges(size: int, n_shards: int) -> list[slice]:
    """Split ``range(size)`` into ``n_shards`` contiguous, non-empty, near-equal slices.

    Examples
    --------
    >>> shard_ranges(10, 3)
    [slice(0, 4, None), slice(4, 7, None), slice(7, 10, None)]
    """
    if not 1 <= n_shards <= size:
        raise ValueError(f"n_shards must be between 1 and {size}, got {n_shards}.")
    bounds = np.linspace(0, size, n_shards + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


@dataclass
class ParameterServer:
    """Shard actors, the slice of θ each one holds, and the futures that keep them alive.

    Methods fan a call out to every shard, then join the answers; they block, so call them
    from the client or from a task, not from inside an actor.
    """

    shards: list[Any]
    ranges: list[slice]
    futures: list[Any]

    @classmethod
    def start(
        cls,
        client: Any,
        params: Array,
        optimizer: GradientTransformation,
        *,
        n_shards: int | None = None,
        n_contributors: int = 1,
    ) -> ParameterServer:
        """Create ``n_shards`` shards (default: one per worker), spread over the workers."""
        if not optimizer.elementwise:
            raise ValueError(
                f"{optimizer!r} is not elementwise: shards cannot apply it to their own slices."
            )
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        n_shards = min(n_shards or len(workers), params.size)
        ranges = shard_ranges(params.size, n_shards)
        name = uuid.uuid4().hex[:8]
        futures = [
            client.submit(
                ParameterShard,
                params[where].copy(),
                optimizer,
                n_contributors,
                actor=True,
                key=f"dask-sgd-shard-{index}-{name}",
                workers=[workers[index % len(workers)]],
                allow_other_workers=True,
            )
            for index, where in enumerate(ranges)
        ]
        return cls(client.gather(futures), ranges, futures)

    def _each(self, method: str, *args_per_shard: list) -> list:
        calls = [
            getattr(shard, method)(*(args[i] for args in args_per_shard))
            for i, shard in enumerate(self.shards)
        ]
        return [call.result() for call in calls]

    def _split(self, values: Array) -> list[Array]:
        return [values[where] for where in self.ranges]

    def get(self) -> Array:
        """The whole parameter vector."""
        return np.concatenate(self._each("get"))

    def put(self, values: Array) -> None:
        self._each("put", self._split(values))

    def add(self, delta: Array, token: Any = None) -> None:
        self._each("add", self._split(delta), [token] * len(self.shards))

    def pull(self, min_version: int = 0) -> tuple[Array, list[int]]:
        """θ and each shard's version, once every shard has reached ``min_version``."""
        answers = self._each("pull", [min_version] * len(self.shards))
        return np.concatenate([p for p, _ in answers]), [v for _, v in answers]

    def push(self, grad: Array, learning_rate: float, token: Any = None) -> list[int]:
        n = len(self.shards)
        return self._each("push", self._split(grad), [learning_rate] * n, [token] * n)

    def snapshot(self) -> list[dict]:
        """Every shard's state; raises if the shards are not at one version."""
        snapshots = self._each("snapshot")
        versions = {s["version"] for s in snapshots}
        if len(versions) != 1:
            raise RuntimeError(f"Shards are at different versions {sorted(versions)}.")
        return snapshots

    def restore(self, snapshots: list[dict]) -> None:
        self._each("restore", snapshots)

    def stats(self) -> list[dict]:
        return self._each("stats")

    def close(self) -> None:
        """Release the actors (their workers drop them once no future refers to them)."""
        for future in self.futures:
            future.release()
        self.shards, self.futures = [], []
