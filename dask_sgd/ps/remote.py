"""A unit's handle on a shard: its address and key, called through the worker's comm layer.

Units do not take the shards' :class:`distributed.Actor` proxies as task arguments, for two
reasons, both about a healthy worker dying:

- An actor proxy is a reference to a task key, so a task that takes one depends on the
  shard's key, and the unit's worker holds a "replica" of it (the proxy). When the trainer
  releases the shard (a restart, a recovery, the end of the fit) while a unit still runs,
  the scheduler tells that worker to drop the replica, and the worker closes itself on
  "Cannot remove replica of 'dask-sgd-shard-…' while … long-running" (issue 19). A
  :class:`ShardRef` is plain data, so a unit depends on no shard.
- A proxy bound to the unit's worker client answers a lost connection by waiting on the
  shard's future; if that future was released meanwhile (the trainer restarted the shards),
  the call's error is only logged and the unit waits for ever
  (``distributed.actor.Actor.__getattr__``, 2026.8). :class:`RemoteShard` raises it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

from distributed.protocol import to_serialize


@dataclass(frozen=True)
class ShardRef:
    """Where a shard lives: its worker's address and its actor's key."""

    address: str
    key: str

    @classmethod
    def of(cls, actor: Any) -> ShardRef:
        return cls(actor._address, actor.key)


class ShardUnreachable(ConnectionError):
    """A call could not reach a shard's worker (it died, or is leaving)."""


class RemoteShard:
    """Calls the methods of a shard on another worker from a task on ``worker``.

    ``shard.method(*args)`` returns a :class:`concurrent.futures.Future` of the answer at
    once (the call runs on the worker's event loop); its ``result()`` raises what the shard
    raised, or :class:`ShardUnreachable`.
    """

    def __init__(self, ref: ShardRef, worker: Any) -> None:
        self.ref, self.worker = ref, worker

    @property
    def address(self) -> str:
        return self.ref.address

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any) -> concurrent.futures.Future:
            return asyncio.run_coroutine_threadsafe(
                self._execute(method, args), self.worker.loop.asyncio_loop
            )

        return call

    async def request(self, method: str, *args: Any) -> Any:
        """The answer of ``method(*args)``, awaited on the worker's event loop (from a
        coroutine there: an actor's method)."""
        return await self._execute(method, args)

    async def _execute(self, method: str, args: tuple) -> Any:
        try:
            answer = await self.worker.rpc(self.ref.address).actor_execute(
                function=method, actor=self.ref.key, args=[to_serialize(a) for a in args]
            )
        except OSError as error:
            raise ShardUnreachable(
                f"Could not reach the parameter-server shard {self.ref.key} on "
                f"{self.ref.address}: {error}"
            ) from error
        if answer["status"] != "OK":
            raise answer["exception"]
        return answer["result"]
