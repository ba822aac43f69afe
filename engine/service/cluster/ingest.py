"""Ingest on any node: the engine's input published to the cluster stream.

:class:`ClusterIngest` is the :class:`~engine.service.daemon.Ingest` a cluster node attaches
(``engine.attach_ingest``): the network intake, ``POST /events`` and the sources hand it their
accepted events instead of applying them; it publishes each to its partition's subject through
a :class:`~.publish.ClusterPublisher` and hands back a **ticket** (1, 2, 3, ... in submission
order). ``wait_accepted(t)`` returns once every ticket up to ``t`` has its PubAck: the intake's
ack then means "stored in the stream", which is the durable state in cluster mode (the owner of
the partition applies it, whichever node that is).

``wait_capacity`` bounds the publishes in flight (accepted, not yet acknowledged): a source or
a connection faster than the stream waits instead of growing memory, as it waits for the storage
writer in the single-process daemon. Until the node has connected (:meth:`start`), it waits too:
sources start with the engine's session, before the node's service has connected.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import TYPE_CHECKING, Final

from engine.core.errors import EventError
from engine.core.events import Event

from .errors import ClusterError
from .publish import PublishError, check_symbol_subject

if TYPE_CHECKING:
    from .publish import ClusterPublisher, PubAck

__all__ = ["ClusterIngest"]

_FAILURES_KEPT: Final = 4096


class ClusterIngest:
    """Tickets over a :class:`ClusterPublisher` (see the module doc)."""

    def __init__(self, *, max_in_flight: int = 8192) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.publisher: ClusterPublisher | None = None
        self._ticket = 0
        # Unanswered tickets, oldest first (dict order): wait_accepted walks only these.
        self._pending: dict[int, asyncio.Future[PubAck]] = {}
        # Recent failures (ticket -> error): an ack covering one of them must not be given.
        self._failed: collections.OrderedDict[int, BaseException] = collections.OrderedDict()
        self._room: asyncio.Event | None = None
        self._started: asyncio.Event | None = None
        self.published = 0
        self.failures = 0

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._room is None or self._started is None:
            self._room, self._started = asyncio.Event(), asyncio.Event()
            self._room.set()
        return self._room, self._started

    def start(self, publisher: ClusterPublisher) -> None:
        """Publish through ``publisher`` from now on (the node calls it once connected)."""
        self.publisher = publisher
        self._events()[1].set()

    def stop(self) -> None:
        """No more input: what is submitted from now on is refused."""
        self.publisher = None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit_nowait(self, event: Event) -> int:
        publisher = self.publisher
        if publisher is None:
            raise ClusterError("the cluster node is not connected: input is not accepted")
        try:
            check_symbol_subject(event.symbol)
        except PublishError as exc:
            # The stream cannot carry it: refused like any other bad event, nothing published.
            raise EventError("symbol", str(exc)) from None
        future = publisher.publish(event)
        self._ticket += 1
        ticket = self._ticket
        self._pending[ticket] = future
        self.published += 1
        future.add_done_callback(functools.partial(self._answered, ticket))
        if len(self._pending) >= self.max_in_flight:
            self._events()[0].clear()
        return ticket

    def _answered(self, ticket: int, future: asyncio.Future[PubAck]) -> None:
        self._pending.pop(ticket, None)
        if future.cancelled() or future.exception() is not None:
            self.failures += 1
            self._failed[ticket] = (
                future.exception() if not future.cancelled() else PublishError("cancelled")
            ) or PublishError("failed")
            while len(self._failed) > _FAILURES_KEPT:
                self._failed.popitem(last=False)
        if len(self._pending) < self.max_in_flight:
            self._events()[0].set()

    async def wait_capacity(self) -> None:
        room, started = self._events()
        if not started.is_set():
            await started.wait()
        while not room.is_set():
            await room.wait()

    async def wait_accepted(self, ticket: int | None) -> None:
        """Return once every ticket up to ``ticket`` is stored in the stream; the publish
        error when one of them (among the recent ones) failed: the events before it may be
        stored, the caller must not report them all accepted."""
        if ticket is None:
            return
        waiting = []
        for t, future in self._pending.items():
            if t > ticket:
                break
            waiting.append(future)
        if waiting:
            await asyncio.wait(waiting)
        for t, error in reversed(self._failed.items()):
            if t <= ticket and ticket - t < self.max_in_flight:
                raise PublishError(f"event ticket {t} was not stored in the stream: {error}")
            if t <= ticket:
                break
