"""A shard's direct lane: synchronous rounds over a plain TCP stream, answered in one message.

A synchronous step through Dask's actor calls costs milliseconds: the call goes from the
unit's thread to its worker's event loop, through Dask's RPC to the shard's worker's event
loop, and back the same way; and the shard's event loop shares its process's GIL with the
unit computing there, which holds it for up to the interpreter's switch interval (5 ms) at a
time. A lane takes the actor machinery off the path of every step (``docs/distributed.md``,
"Synchronous steps: the shards' direct lanes"):

- the shard's rule (a :class:`~dask_sgd.ps.rules.Barrier`) opens a listening socket on its
  worker's host, once, through an ordinary actor request (``open_lane``); the units of a
  segment connect to it as they start;
- a unit's push is one message (header, round, token, rate and the raw gradient bytes), sent
  from the unit's own thread; a thread of the lane receives it and hands it to the rule
  under the lane's lock; whichever thread completes the round (applies the optimizer step)
  sends every waiting unit its answer, the new parameters and version, in one message;
- a unit on the shard's own worker does the same without a socket: it contributes under the
  lock and waits on a condition variable (releasing the GIL) until the round is applied.

What the rule does is unchanged: the round's mean, late contributions dropped and counted,
a token applied once, a non-finite update refused. So is what ends a wait: an abort of the
shard (:meth:`~dask_sgd.ps.shard.ParameterShard.abort`) answers every waiting unit with
:class:`~dask_sgd.errors.TrainingAborted`, and a shard lost with its worker closes the
stream, which the unit raises as :class:`ConnectionError` (the trainer then finds the lost
shard and recovers from the snapshot). TCP keepalive bounds the wait on a machine that
vanished without closing its streams.

A stream must first send the lane's random secret, which ``open_lane`` hands out through
Dask's comms; messages are JSON and raw array bytes, never pickle, so a stream carries no
code. The lane's threads end once no unit has been connected for :data:`IDLE_SECONDS`; the
next ``open_lane`` starts them again.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import numpy as np
from distributed.comm import get_address_host

from dask_sgd.errors import NonFiniteParameters, TrainingAborted

Array = Any

#: message framing: the length of the metadata (JSON), then of the raw array bytes
HEADER = struct.Struct("!IQ")
#: the length of a lane's secret, the first bytes a unit's stream sends
SECRET_BYTES = 16
#: a lane with no connected unit for this long closes its listening socket and its thread
IDLE_SECONDS = 1.0
#: how often a blocked wait looks again at the shard's abort flag (a safety net: an abort
#: wakes the waits at once)
POLL_SECONDS = 0.5


# --- framing --------------------------------------------------------------------------------------


def send_message(sock: socket.socket, meta: Any, array: Array | None = None) -> None:
    """One message: ``meta`` (JSON: numbers, strings and lists, never pickle, so that a
    stream can carry no code) and the bytes of a contiguous 1-D array, if any."""
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    payload = memoryview(b"" if array is None else np.ascontiguousarray(array)).cast("B")
    parts = [memoryview(HEADER.pack(len(meta_bytes), payload.nbytes)), memoryview(meta_bytes)]
    parts.append(payload)
    sent = sock.sendmsg(parts)  # one system call, unless the array is large
    for part in parts:
        if sent >= part.nbytes:
            sent -= part.nbytes
            continue
        sock.sendall(part[sent:])
        sent = 0


def _receive_exactly(sock: socket.socket, n_bytes: int) -> bytearray | None:
    buffer = bytearray(n_bytes)
    view, received = memoryview(buffer), 0
    while received < n_bytes:
        got = sock.recv_into(view[received:])
        if got == 0:
            return None
        received += got
    return buffer


def receive_message(sock: socket.socket) -> tuple[Any, bytearray] | None:
    """``(meta, payload bytes)`` of the next message; None if the stream closed cleanly."""
    header = _receive_exactly(sock, HEADER.size)
    if header is None:
        return None
    meta_size, payload_size = HEADER.unpack(header)
    meta_bytes = _receive_exactly(sock, meta_size)
    payload = _receive_exactly(sock, payload_size) if payload_size else bytearray()
    if meta_bytes is None or payload is None:
        return None
    return json.loads(meta_bytes), payload


def _tuned(sock: socket.socket) -> socket.socket:
    """No Nagle delay (a push is one small message that waits for its answer), and
    keepalive probes that find a peer machine gone in about 10 s."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    return sock


# --- the shard's side -----------------------------------------------------------------------------


class _Stream:
    """A connected unit, as the lane sees it: answers go out under a lock of their own."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def answer(self, params: Array, version: int) -> None:
        self._send(("ok", version, params.dtype.str), params)

    def fail(self, error: BaseException) -> None:
        self._send(("error", *_error_fields(error)), None)

    def _send(self, meta: Any, array: Array | None) -> None:
        try:
            with self.lock:
                send_message(self.sock, meta, array)
        except OSError:  # the unit is gone: nobody to answer
            pass


class PushLane:
    """The direct lane of one shard and its rule (see the module's docstring).

    ``rule`` is a :class:`~dask_sgd.ps.rules.Barrier` bound to ``shard``; the lane calls its
    ``contribute`` under :attr:`lock`. ``host`` is where the listening socket binds (the
    shard's worker's host).
    """

    def __init__(self, shard: Any, rule: Any, host: str) -> None:
        self.shard, self.rule, self.host = shard, rule, host
        self.lock = threading.Lock()
        self.applied = threading.Condition(self.lock)  # a local unit waits on it
        self._waiting: list[tuple[int, _Stream]] = []  # (version needed, remote unit)
        self._listener: socket.socket | None = None
        self._connections = 0
        self._last_used = time.monotonic()
        self.secret = secrets.token_bytes(SECRET_BYTES)

    # --- opening -------------------------------------------------------------------------------

    def open(self) -> tuple[str, int, str]:
        """The address units connect to and the lane's secret (what a stream sends first;
        it reaches the units through Dask's comms); starts listening if the lane was idle."""
        with self.lock:
            self._last_used = time.monotonic()
            if self._listener is None:
                listener = socket.create_server((self.host, 0))
                listener.settimeout(POLL_SECONDS / 2)
                self._listener = listener
                threading.Thread(
                    target=self._accept, args=(listener,), name="dask-sgd-lane-accept", daemon=True
                ).start()
            return (*self._listener.getsockname()[:2], self.secret.hex())

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                with self.lock:
                    idle = time.monotonic() - self._last_used > IDLE_SECONDS
                    if idle and not self._connections:
                        self._listener = None
                        listener.close()
                        return
                continue
            except OSError:  # closed
                return
            sock.settimeout(None)
            with self.lock:
                self._connections += 1
            threading.Thread(
                target=self._serve, args=(_Stream(_tuned(sock)),), name="dask-sgd-lane", daemon=True
            ).start()

    def _serve(self, stream: _Stream) -> None:
        """One remote unit's requests, until it closes the stream (or sends a wrong secret)."""
        try:
            try:
                secret = _receive_exactly(stream.sock, SECRET_BYTES)
            except OSError:
                secret = None
            if secret is None or not secrets.compare_digest(bytes(secret), self.secret):
                return
            while True:
                try:
                    message = receive_message(stream.sock)
                except OSError:
                    message = None
                if message is None:
                    return
                meta, payload = message
                if meta[0] == "push":
                    _, round_, token, rate, dtype = meta
                    value, token = np.frombuffer(payload, dtype), _hashable(token)
                    self._request(stream, round_ + 1, (round_, value, token, rate))
                else:  # ("pull", min_version)
                    self._request(stream, meta[1], None)
        finally:
            stream.sock.close()
            with self.lock:
                self._connections -= 1
                self._last_used = time.monotonic()
                self._waiting = [(v, s) for v, s in self._waiting if s is not stream]

    def _request(self, stream: _Stream, needed: int, push: tuple | None) -> None:
        """A remote unit's push (contribution, then the answer once the version reaches
        ``needed``) or pull (``push`` None)."""
        error, ready = None, []
        with self.lock:
            if self.shard.aborted is not None:
                error = _aborted(self.shard)
            else:
                try:
                    if push is not None:
                        self.rule.contribute(*push)
                except Exception as failure:  # noqa: BLE001 (a refused update: its unit reports it)
                    error = failure
                if error is None:
                    self._waiting.append((needed, stream))
                ready = self._answerable()
        if error is not None:
            stream.fail(error)
        self._send(ready)

    def _answerable(self) -> list[tuple[_Stream, Array, int]]:
        """The remote units whose version has come (under the lock), released from waiting;
        the local units waiting are woken."""
        version, params = self.shard.version, self.shard.params
        ready = [(stream, params, version) for needed, stream in self._waiting if needed <= version]
        if ready:
            self._waiting = [(v, s) for v, s in self._waiting if v > version]
        self.applied.notify_all()
        return ready

    @staticmethod
    def _send(ready: list[tuple[_Stream, Array, int]]) -> None:
        for stream, params, version in ready:
            stream.answer(params, version)

    # --- a unit on the shard's own worker -----------------------------------------------------------

    def push(self, round_: int, value: Array, token: Any, rate: float) -> None:
        """Contribute to ``round_`` without waiting (answers the remote units it releases)."""
        error = None
        with self.lock:
            if self.shard.aborted is not None:
                raise _aborted(self.shard)
            try:
                self.rule.contribute(round_, value, token, rate)
            except Exception as failure:  # noqa: BLE001 (raised below, once others are answered)
                error = failure
            ready = self._answerable()
        self._send(ready)
        if error is not None:
            raise error

    def wait(self, min_version: int) -> tuple[Array, int]:
        """The parameters and version once the version reaches ``min_version`` (the GIL
        is released meanwhile); raise :class:`TrainingAborted` if the shard is aborted."""
        shard = self.shard
        with self.lock:
            while shard.version < min_version and shard.aborted is None:
                self.applied.wait(POLL_SECONDS)
            if shard.aborted is not None:
                raise _aborted(shard)
            return shard.params, shard.version

    # --- abort ------------------------------------------------------------------------------------

    def abort(self) -> None:
        """Answer every waiting unit with :class:`TrainingAborted` (the shard is aborted)."""
        with self.lock:
            waiting, self._waiting = self._waiting, []
            self.applied.notify_all()
        for _, stream in waiting:
            stream.fail(_aborted(self.shard))


def _aborted(shard: Any) -> TrainingAborted:
    return TrainingAborted(f"Training was aborted: {shard.aborted}")


def _hashable(token: Any) -> Any:
    """A token as the unit made it: JSON turns its tuples into lists."""
    return tuple(map(_hashable, token)) if isinstance(token, list) else token


def _error_fields(error: BaseException) -> list:
    """An error as plain fields: its kind and what rebuilds it (:func:`_error`)."""
    if isinstance(error, NonFiniteParameters):
        return ["non-finite", error.step, error.what, error.partition]
    if isinstance(error, TrainingAborted):
        return ["aborted", str(error)]
    return ["other", f"{type(error).__name__}: {error}"]


def _error(kind: str, *fields: Any) -> BaseException:
    if kind == "non-finite":
        return NonFiniteParameters(*fields)
    if kind == "aborted":
        return TrainingAborted(*fields)
    return RuntimeError(f"A parameter-server shard's lane failed: {fields[0]}")


_CREATING = threading.Lock()


def lane_of(rule: Any, host: str) -> PushLane:
    """The lane of ``rule`` (bound to its shard), created on first use, from any thread."""
    with _CREATING:
        if rule.lane is None:
            rule.lane = PushLane(rule.shard, rule, host)
        return rule.lane


# --- the unit's side ------------------------------------------------------------------------------


def address_host(address: str) -> str:
    """The host of a worker's address; this machine's loopback for in-process workers."""
    if address.startswith(("tcp://", "tls://")):
        return get_address_host(address)
    return "127.0.0.1"


def _connect(shard: Any) -> LaneStream:
    """A stream to the lane of ``shard`` (a :class:`~dask_sgd.ps.remote.RemoteShard`); asks
    again once if the lane went idle meanwhile."""
    host = address_host(shard.address)
    for attempt in range(2):
        address = shard.call("open_lane", host).result()
        try:
            return LaneStream((address[0], address[1]), bytes.fromhex(address[2]))
        except ConnectionRefusedError:
            if attempt:
                raise
    raise AssertionError("unreachable")


class LaneStream:
    """A unit's stream to a remote shard's lane: one request at a time."""

    def __init__(self, address: tuple[str, int], secret: bytes) -> None:
        self.sock = _tuned(socket.create_connection(address))
        self.sock.sendall(secret)

    def send_push(self, round_: int, value: Array, token: Any, rate: float) -> None:
        value = np.ascontiguousarray(value)
        send_message(self.sock, ("push", round_, token, rate, value.dtype.str), value)

    def send_pull(self, min_version: int) -> None:
        send_message(self.sock, ("pull", min_version))

    def receive(self) -> tuple[Array, int]:
        """The answer to the request sent: the shard's parameters and version."""
        message = receive_message(self.sock)
        if message is None:
            raise ConnectionError("The parameter-server shard's lane closed its stream.")
        meta, payload = message
        if meta[0] == "error":
            raise _error(*meta[1:])
        _, version, dtype = meta
        return np.frombuffer(payload, dtype), version

    def close(self) -> None:
        self.sock.close()


class Lanes:
    """A unit's lanes to every shard: ``(slice, lane)`` pairs, a :class:`PushLane` for a
    shard on the unit's own worker, else a :class:`LaneStream`. Requests go to the remote
    shards first, so that no remote push waits on a local round."""

    def __init__(self, lanes: list[tuple[slice, PushLane | LaneStream]]) -> None:
        self.remote = [(where, lane) for where, lane in lanes if isinstance(lane, LaneStream)]
        self.local = [(where, lane) for where, lane in lanes if isinstance(lane, PushLane)]

    @classmethod
    def open(cls, remote: list[tuple[Any, slice]], local: list[tuple[Any, slice]], here: str):
        """Lanes to the shards: ``remote``, ``(RemoteShard, slice)`` pairs of shards on
        other workers (one ``open_lane`` call each); ``local``, ``(shard, slice)`` pairs of
        shard objects on this worker, whose address is ``here``."""
        lanes: list[tuple[slice, PushLane | LaneStream]] = []
        try:
            for shard, where in remote:
                lanes.append((where, _connect(shard)))
            for shard, where in local:
                lanes.append((where, lane_of(shard.rule, address_host(here))))
        except BaseException:
            cls(lanes).close()
            raise
        return cls(lanes)

    def push(
        self, round_: int, value: Array, token: Any, rate: float, keys: None = None
    ) -> list[tuple[slice, Any]]:
        """Contribute ``value`` (the whole vector; each shard gets its slice) to ``round_``;
        each shard's answer (parameters, version) once the round is applied, by slice.
        Lanes carry dense vectors only (``keys`` is None): sparse input takes actor calls."""
        if keys is not None:
            raise ValueError("A lane carries dense parameters: sparse input takes actor calls.")
        return self.push_pieces(round_, value, iter((slice(0, value.shape[0]),)), token, rate)

    def push_pieces(
        self, round_: int, value: Array, pieces: Iterator[slice], token: Any, rate: float
    ) -> list[tuple[slice, Any]]:
        """:meth:`push` of a gradient that the backward pass finishes by pieces (slices of
        θ from its end backward; iterating ``pieces`` fills ``value``): each shard's slice
        goes out as soon as the pieces reach its start, while the rest is computed (the
        layer-wise exchange, as DDP's buckets); the remote shards first among those ready
        together."""
        pending = sorted(self.remote + self.local, key=lambda lane: lane[0].start)
        for piece in pieces:
            ready = [(where, lane) for where, lane in pending if where.start >= piece.start]
            pending = pending[: len(pending) - len(ready)]
            for where, lane in sorted(ready, key=lambda lane: isinstance(lane[1], PushLane)):
                if isinstance(lane, LaneStream):
                    lane.send_push(round_, value[where], token, rate)
                else:
                    lane.push(round_, value[where], token, rate)
        if pending:
            raise ValueError(f"The gradient's pieces did not reach {pending[0][0]}.")
        return self._answers(round_ + 1)

    def pull(self, min_version: int, keys: None = None) -> list[tuple[slice, Any]]:
        """Each shard's parameters and version once it has reached ``min_version``."""
        if keys is not None:
            raise ValueError("A lane carries dense parameters: sparse input takes actor calls.")
        for _, lane in self.remote:
            lane.send_pull(min_version)
        return self._answers(min_version)

    def _answers(self, min_version: int) -> list[tuple[slice, Any]]:
        parts = [(where, lane.wait(min_version)) for where, lane in self.local]
        parts += [(where, lane.receive()) for where, lane in self.remote]
        parts.sort(key=lambda part: part[0].start)
        return parts

    def close(self) -> None:
        for _, lane in self.remote:
            lane.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
