"""Ingest on any node: publish accepted events to their partition's subject, pipelined, and
hand back the JetStream PubAck as the event's acknowledgement.

Wiring: where a source calls ``await engine.submit(event)`` today, cluster mode calls
``await publisher.publish(event)``; the intake's ack then means "stored in the stream".
``publish`` returns at once with a future, so a connection can keep many events in flight and
await their acks in order.

**Message ids.** Every publish carries ``Nats-Msg-Id``, fixed when :meth:`publish` accepts the
event and reused by every retry of it, so a retry after a lost PubAck (reconnect, ack timeout)
is stored once: the server answers it with ``duplicate: true`` and the first copy's sequence.
A source with a stable identity for its events passes ``msg_id=message_id(node, source, seq)``
(a replay file's path and line: a replay re-run after a crash then de-duplicates too, inside the
window); otherwise the id is ``<node>/<boot>/<n>``, where ``boot`` is random per publisher:
a bare counter would restart at 0 with the process and collide with the previous incarnation's
ids inside the duplicate window, silently dropping new events as "duplicates".

**Order.** The server stores one connection's publishes in the order it reads them, so a
pipeline keeps per-symbol order as long as nothing is lost in the middle of it. A lost middle is
what nats-py's own reconnect produces: commands still in its buffer when the socket dies are
sent first on the new connection, ahead of the retries of those lost with the socket. So the
publisher owns a connection with reconnects off: when it breaks, or an ack is late by
``ack_timeout_s`` (the connection is then closed on purpose), the buffered rest dies with it, a
new connection re-sends every unacknowledged publish in the original order (same ids), and only
then anything new. The server merges the two in-order copies and keeps each id's first: order
holds. "No responders" (JetStream away: a server shutting down disables it before it drops its
clients) is handled the same way: the publish stays in flight, the connection counts as
broken, and a new one re-sends in order once the stream answers (a probe after every connect).
The one gap: a JetStream that answers "no responders" to one publish and stores the next on
the same connection (a clustered stream's leader election) stores the re-sent one after it.
A publish the server refuses (an error in its PubAck) fails alone; the ones after it stand, so
the order of acknowledged events is kept.

nats-py's ``flush()`` returns before buffered publishes are written unless the loop yields
first (the trial's finding): nothing here relies on ``flush()``; completion is the PubAcks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from engine.config.schema import ClusterSettings
from engine.core.events import Event

from .errors import ClusterError
from .partition import partition_of, subject_for

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = ["ClusterPublisher", "PubAck", "PublishError", "message_id"]

log = logging.getLogger("tickflow.cluster.publish")

_MSG_ID: Final = "Nats-Msg-Id"


class PublishError(ClusterError):
    """An event was not stored in the stream, or could not be confirmed stored."""


class PubAck(msgspec.Struct, frozen=True):
    """The stream's acknowledgement: ``seq`` is the event's stream sequence (the first copy's
    when ``duplicate``: a retried or re-sent publish of an event already stored)."""

    stream: str
    seq: int
    duplicate: bool = False


class _Reply(msgspec.Struct):
    stream: str | None = None
    seq: int | None = None
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode
_encode_event = msgspec.json.Encoder().encode


def message_id(node: str, source: str, source_seq: int) -> str:
    """The ``Nats-Msg-Id`` of the ``source_seq``-th event of ``source`` on ``node``: the same
    event published again (a retry, a replay re-run) gets the same id and is stored once."""
    return f"{node}/{source}/{source_seq}"


def check_symbol_subject(symbol: str) -> None:
    """A symbol becomes the subject's last token(s): ``BRK.B`` is two tokens and fine, but an
    empty token (``.A``, ``A.``, ``A..B``) is a subject no stream captures."""
    if not symbol or not symbol.isascii() or not symbol.isprintable() or " " in symbol:
        raise PublishError(f"symbol {symbol!r} cannot be a subject token")
    if symbol.startswith(".") or symbol.endswith(".") or ".." in symbol:
        raise PublishError(
            f"symbol {symbol!r} would make an empty subject token (a '.' at an end or two in a "
            f"row): no stream captures such a subject"
        )


class _Pending:
    __slots__ = ("created", "future", "msg_id", "payload", "sent", "subject")

    def __init__(self, subject: str, payload: bytes, msg_id: str, created: float) -> None:
        self.subject = subject
        self.payload = payload
        self.msg_id = msg_id
        self.created = created
        self.sent = 0.0
        self.future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()


class ClusterPublisher:
    """Publishes events to ``<prefix>.part.<p>.<symbol>`` of the cluster stream.

    At most ``window`` publishes wait for their PubAck at a time; more wait in order behind
    them. An ack later than ``ack_timeout_s`` counts as a broken connection (see the module
    doc); a publish unconfirmed ``deadline_s`` after :meth:`publish` accepted it fails with
    :class:`PublishError` naming the last problem (it may or may not be in the stream).
    """

    def __init__(
        self,
        settings: ClusterSettings,
        *,
        node: str,
        url: str | None = None,
        window: int = 2048,
        ack_timeout_s: float = 2.0,
        deadline_s: float = 30.0,
        reconnect_wait_s: float = 0.1,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.settings = settings
        self.node = node
        self.url = url or settings.nats_url
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.deadline_s = deadline_s
        self.reconnect_wait_s = reconnect_wait_s
        self._boot = ""
        self._counter = 0
        self._token = 0
        self._outbox: collections.deque[_Pending] = collections.deque()
        self._inflight: dict[str, _Pending] = {}
        self._nc: NATS | None = None
        self._inbox = ""
        self._broken = True
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self.published = 0
        self.acked = 0
        self.duplicates = 0
        self.resent = 0
        self.reconnects = 0
        self.failed = 0
        self._last_problem = ""

    async def start(self) -> ClusterPublisher:
        """Connect (a failure here is a :class:`ClusterError` at once) and start sending."""
        from nats.nuid import NUID

        self._boot = NUID().next().decode()[-12:]
        self._wake = asyncio.Event()
        await self._connect()
        self._sender = asyncio.create_task(self._run(), name="cluster-publisher")
        return self

    @property
    def in_flight(self) -> int:
        """Publishes accepted and not yet acknowledged or failed."""
        return len(self._inflight) + len(self._outbox)

    def publish(self, event: Event, *, msg_id: str | None = None) -> asyncio.Future[PubAck]:
        """Queue ``event`` for its partition's subject; the future is its PubAck. Raises
        :class:`PublishError` at once for an event that cannot be published (a symbol that is
        no subject), or when the publisher is closed."""
        if self._wake is None or self._closing:
            raise PublishError("the cluster publisher is not running")
        symbol = event.symbol
        check_symbol_subject(symbol)
        if msg_id is None:
            self._counter += 1
            msg_id = f"{self.node}/{self._boot}/{self._counter}"
        subject = subject_for(
            self.settings.prefix, partition_of(symbol, self.settings.partitions), symbol
        )
        entry = _Pending(subject, _encode_event(event), msg_id, time.monotonic())
        self._outbox.append(entry)
        self.published += 1
        self._wake.set()
        return entry.future

    async def close(self, grace_s: float = 10.0) -> None:
        """Wait up to ``grace_s`` for every accepted publish to be acknowledged (or fail),
        then disconnect; whatever is still unconfirmed then fails with :class:`PublishError`."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        futures = [e.future for e in (*self._inflight.values(), *self._outbox)]
        if futures:
            await asyncio.wait(futures, timeout=grace_s)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self._fail_all("the cluster publisher closed before the stream confirmed it")
        await self._disconnect()

    # -- the connection ----------------------------------------------------------------------

    async def _connect(self) -> None:
        import nats

        holder: list[NATS] = []

        async def on_closed() -> None:
            # only this connection's end matters: an old one's callback may run late
            if holder and holder[0] is self._nc:
                self._last_problem = "the connection to the NATS server closed"
                self._mark_broken()

        async def on_error(exc: Exception) -> None:
            log.debug("cluster publish connection: %s", exc)

        try:
            # max_reconnect_attempts also bounds the *first* connect's retries (0 means
            # forever); the publisher's own loop retries, checking its deadlines in between
            async with asyncio.timeout(5.0):
                nc = await nats.connect(
                    self.url, allow_reconnect=False, connect_timeout=2,
                    max_reconnect_attempts=1, reconnect_time_wait=0.05, closed_cb=on_closed,
                    error_cb=on_error, name=f"tickflow-publisher {self.node}",
                )
        except Exception as exc:
            raise ClusterError(f"cannot connect to NATS at {self.url}: {exc}") from exc
        holder.append(nc)
        try:
            await self._probe(nc)
        except ClusterError:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        inbox = f"{nc.new_inbox()}."
        await nc.subscribe(f"{inbox}*", cb=self._on_reply)
        self._nc, self._inbox, self._broken = nc, inbox, False

    async def _probe(self, nc: NATS) -> None:
        """The stream answers before anything is sent on a new connection: no point re-sending
        into a server whose JetStream is not up yet, and a missing stream is named at once."""
        stream = self.settings.stream
        try:
            msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2.0)
            reply = msgspec.json.decode(msg.data)
        except Exception as exc:
            raise ClusterError(
                f"JetStream at {self.url} does not answer for stream {stream!r} ({exc!r})"
            ) from exc
        if not isinstance(reply, dict) or "error" in reply:
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise ClusterError(f"stream {stream!r} at {self.url}: {error}")

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    def _mark_broken(self) -> None:
        self._broken = True
        if self._wake is not None:
            self._wake.set()

    # -- acks ----------------------------------------------------------------------------------

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox):]
        if msg.headers and msg.headers.get("Status") == "503":
            # No responders: JetStream is away (a server shutting down disables it before it
            # drops its clients; a stream leader election). Not this publish's fault: it stays
            # in flight and the connection is treated as broken, so it is re-sent in order
            # with everything after it once the stream answers again.
            if token in self._inflight and not self._broken:
                self._last_problem = f"no stream answered for {self._inflight[token].subject}"
                self._mark_broken()
            return
        entry = self._inflight.pop(token, None)
        if entry is None or entry.future.done():
            return  # an ack for a publish already re-sent under another token
        if self._outbox and self._wake is not None:
            self._wake.set()  # room in the window for what waits behind it
        try:
            reply = _decode_reply(msg.data)
        except msgspec.DecodeError as exc:
            self._fail(entry, f"unreadable PubAck {msg.data[:200]!r}: {exc}")
            return
        if reply.error is not None or reply.seq is None or reply.stream is None:
            self._fail(entry, f"the stream refused it: {reply.error}")
            return
        if reply.stream != self.settings.stream:
            self._fail(entry, f"stored in stream {reply.stream!r}, not the cluster stream "
                              f"{self.settings.stream!r}: another stream captures its subject")
            return
        self.acked += 1
        if reply.duplicate:
            self.duplicates += 1
        entry.future.set_result(PubAck(reply.stream, reply.seq, reply.duplicate))

    def _fail(self, entry: _Pending, why: str) -> None:
        self.failed += 1
        if not entry.future.done():
            entry.future.set_exception(
                PublishError(f"publish {entry.msg_id} to {entry.subject}: {why}")
            )

    def _fail_all(self, why: str) -> None:
        for entry in (*self._inflight.values(), *self._outbox):
            self._fail(entry, why)
        self._inflight.clear()
        self._outbox.clear()

    # -- the sender ------------------------------------------------------------------------------

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            if self._broken and (self._inflight or self._outbox):
                await self._recover()
                continue
            await self._send_ready()
            # yield so nats-py's flusher writes what was just queued before more is added
            await asyncio.sleep(0)
            timeout = self._next_ack_deadline()
            if timeout is not None and timeout <= 0:
                log.warning("cluster publish: a PubAck is %.1f s late, reconnecting",
                            self.ack_timeout_s)
                self._last_problem = f"a PubAck {self.ack_timeout_s} s late"
                await self._disconnect()
                self._mark_broken()
                continue
            if self._outbox and len(self._inflight) < self.window and not self._broken:
                continue
            wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that arrives
            # as the event is set, and close() does both
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()

    def _next_ack_deadline(self) -> float | None:
        for entry in self._inflight.values():  # insertion order: the oldest first
            return entry.sent + self.ack_timeout_s - time.monotonic()
        return None

    async def _send_ready(self) -> None:
        nc = self._nc
        while self._outbox and len(self._inflight) < self.window and not self._broken:
            entry = self._outbox.popleft()
            if not await self._send(nc, entry):
                self._outbox.appendleft(entry)
                self._mark_broken()
                return

    async def _send(self, nc: NATS | None, entry: _Pending) -> bool:
        if nc is None or entry.future.done():
            return nc is not None
        self._token += 1
        token = str(self._token)
        self._inflight[token] = entry
        entry.sent = time.monotonic()
        # the one header: every consumer's nats-py parses headers per character, so the
        # stream name is checked in the PubAck rather than sent as Nats-Expected-Stream
        headers = {_MSG_ID: entry.msg_id}
        try:
            await nc.publish(entry.subject, entry.payload, reply=self._inbox + token,
                             headers=headers)
        except Exception:
            del self._inflight[token]
            return False
        return True

    async def _recover(self) -> None:
        """A new connection, then every unacknowledged publish again in its original order,
        ahead of anything new; publishes past their deadline fail instead."""
        await self._disconnect()
        resend = [e for e in self._inflight.values() if not e.future.done()]
        self._inflight.clear()
        self._outbox.extendleft(reversed(resend))
        while True:
            now = time.monotonic()
            while self._outbox and now - self._outbox[0].created > self.deadline_s:
                self._fail(self._outbox.popleft(),
                           f"not confirmed within {self.deadline_s} s ({self._last_problem}): "
                           f"the event may or may not be in the stream")
            if not self._outbox:
                return
            # a retry backoff, also between re-sends a stream keeps refusing: no event to wait on
            await asyncio.sleep(self.reconnect_wait_s)
            try:
                await self._connect()
            except ClusterError as exc:
                self._last_problem = str(exc)
                log.warning("cluster publish: %s; retrying", exc)
                continue
            self.reconnects += 1
            self.resent += len(resend)
            return
