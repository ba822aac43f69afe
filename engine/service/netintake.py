"""Network intake: JSON-lines events over TCP and a Unix socket, one acknowledgement per line.

Protocol: a client sends events as JSON objects, one per ``\\n``-terminated
line, and may pipeline as many as it likes. Every line gets exactly one reply line, in order::

    {"ok":true,"seq":N}                      accepted
    {"ok":false,"error":"<reason>: <text>"}  rejected (reason from engine.intake.REJECT_REASONS)

"Accepted" means durable where storage is on: the ack is written only once the event's journal
record is committed (``seq`` is the journal seq), so a client that got an ack may forget the
event. Where storage is off, ``seq`` is this process's own count of accepted events and the ack
means the engine has taken the event. Without an ack (a crash, a shutdown cancelling a batch)
the client must resend: delivery is at-least-once.

Shape of a connection's loop, and why:

* one ``read`` of at most :data:`READ_CHUNK` bytes; :class:`LineSplitter` cuts it into lines
  (pure, bounded: an oversized line is rejected as soon as it is known to be too long and
  discarded up to its newline, so a newline-less flood costs at most ``max_line_bytes``);
* the lines are decoded and submitted in slices of ``max_batch`` with a loop turn in between, so
  one client's burst cannot starve the others (nor the agents);
* the chunk's acks are queued to the connection's acker task, which waits for the commit of the
  last seq of everything queued and writes all those acks at once: one commit wait per group
  of reads, never per line, and the next lines are read meanwhile (at most
  :data:`PIPELINE_DEPTH` chunks wait for their acks), which is what makes pipelining fast;
* the acker's ``drain()`` blocks while the client leaves more than ``write_high_water`` bytes
  of acks unread; the queue then fills and nothing more is read from that client -- its kernel
  buffers fill and TCP flow control stops it. Memory per connection is therefore bounded by
  the stream reader's limit + one chunk + one line + ``PIPELINE_DEPTH`` chunks of acks + the
  high-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec
import orjson

from engine.config import IntakeSettings
from engine.core.errors import EventError
from engine.core.ratelimit import RateLimitedLog
from engine.intake import EventDecoder, IntakeStats, RejectLog
from engine.service.netlines import IntakeError, LineSplitter, Oversized, is_loopback, load_token
from engine.service.sockets import (
    close_writer,
    peer_name,
    remove_stale_socket,
    socket_path,
    unlink_quietly,
)

if TYPE_CHECKING:
    from engine.service.daemon import Engine

__all__ = ["PIPELINE_DEPTH", "READ_CHUNK", "IntakeServerStats", "IntakeServers"]

log = logging.getLogger("tickflow.intake.net")

# One read's worth of bytes; also the StreamReader limit, above twice which the transport stops
# reading from the socket (asyncio's own bound on the read buffer).
READ_CHUNK: Final = 64 * 1024

_UNAUTHORIZED: Final = b'{"ok":false,"error":"unauthorized"}\n'
_AUTH_TIMEOUT: Final = b'{"ok":false,"error":"unauthorized: no auth line in time"}\n'
AUTH_TIMEOUT_S: Final = 10.0
_TOO_MANY: Final = b'{"ok":false,"error":"too many connections"}\n'
_AUTH_OK: Final = b'{"ok":true}\n'
_SHUTDOWN_GRACE_S: Final = 5.0
# How long a closing connection may take to flush its last acks to a client that reads them;
# past it the socket is aborted (RST): see sockets.close_writer.
_CLOSE_GRACE_S: Final = 1.0
# Read chunks whose acks may wait (for their commit, or for the client to read them) while the
# next chunk is read: enough to keep a couple of group commits in flight per connection.
PIPELINE_DEPTH: Final = 8


# -- the servers -----------------------------------------------------------------------------


class IntakeServerStats(msgspec.Struct, frozen=True, kw_only=True):
    connections_accepted: int
    connections_active: int
    connections_refused: int
    idle_closed: int
    unauthorized: int
    lines: int
    acked: int
    half_lines: int
    backpressure_waits: int
    max_write_buffer: int
    decoder: IntakeStats


class _Conn:
    __slots__ = ("failed", "idle_deadline", "reading", "source", "task")

    def __init__(self, task: asyncio.Task[None] | None, source: str, idle_deadline: float) -> None:
        self.task = task
        self.source = source
        self.reading = False
        self.failed = False  # the acker failed (client gone or stalled): the reader stops
        # Loop time by which the next complete line must arrive. Bytes alone do not push it
        # back: a client dripping a space every few seconds is as idle as a silent one.
        self.idle_deadline = idle_deadline


class IntakeServers:
    """The TCP and Unix-socket listeners of one engine, for the duration of an ``async with``.

    Meant for ``engine.services`` (entered once the engine runs, exited before its drain). On
    exit: stop accepting, let every connection finish the batch it is processing (its acks
    included), close idle ones at once, and cancel what is still busy after a grace period.
    """

    def __init__(
        self,
        engine: Engine,
        settings: IntakeSettings | None = None,
        *,
        token: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings if settings is not None else engine.config.intake
        self.token = token if token is not None else load_token(self.settings, environ)
        self.decoder = EventDecoder(engine.config.engine.max_line_bytes)
        self.reject_log = RejectLog()
        self._log = RateLimitedLog(log)  # the project's one rate limiter (engine.core.ratelimit)
        self._servers: list[asyncio.Server] = []
        self._conns: dict[asyncio.StreamWriter, _Conn] = {}
        self._closing = False
        self._unix_bound: Path | None = None
        self.tcp_port: int | None = None
        self.unix_path: str | None = None
        self._accepted_seq = 0  # storage off: the seq we hand out ourselves
        self.connections_accepted = 0
        self.connections_refused = 0
        self.idle_closed = 0
        self.unauthorized = 0
        self.lines = 0
        self.acked = 0
        self.half_lines = 0
        self.backpressure_waits = 0  # times a client's unread acks stopped us reading it
        self.max_write_buffer = 0  # the most ack bytes ever buffered for one connection
        # Set at the first such wait (observability for tests and operators; never cleared).
        self.backpressured = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> IntakeServers:
        self.engine.attach_intake(self)  # the metrics collector reads statistics() at scrapes
        try:
            await self._start()
        except BaseException:
            await self._close_servers()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        s = self.settings
        if s.tcp_port is not None:
            if self.token is None and not is_loopback(s.tcp_host):
                log.warning(
                    "intake listens beyond loopback without a token",
                    extra={"host": s.tcp_host},
                )
            try:
                server = await asyncio.start_server(
                    self._handle, s.tcp_host, s.tcp_port, limit=READ_CHUNK
                )
            except OSError as exc:
                raise IntakeError(
                    f"cannot listen on {s.tcp_host}:{s.tcp_port}: {exc.strerror or exc}"
                ) from exc
            self._servers.append(server)
            self.tcp_port = int(server.sockets[0].getsockname()[1])
            log.info(
                "intake listening",
                extra={"transport": "tcp", "host": s.tcp_host, "port": self.tcp_port},
            )
        if s.unix_path:
            path = socket_path(s.unix_path)
            await remove_stale_socket(path, "[intake] unix_path", IntakeError)
            try:
                server = await asyncio.start_unix_server(self._handle, path, limit=READ_CHUNK)
            except OSError as exc:
                raise IntakeError(f"cannot listen on {str(path)!r}: {exc.strerror or exc}") from exc
            self._servers.append(server)
            self._unix_bound = path
            # Group-writable, not world-writable: the socket takes orders for the desk's books.
            os.chmod(path, 0o660)
            self.unix_path = str(path)
            log.info("intake listening", extra={"transport": "unix", "path": str(path)})

    async def close(self) -> None:
        """Stop accepting, let connections finish their current batch, then close them."""
        if self._closing:
            return
        self._closing = True
        for server in self._servers:
            server.close()
        tasks = []
        for conn in list(self._conns.values()):
            if conn.task is None:
                continue
            if conn.reading:
                # Waiting for input: stop reading (its queued acks still go out, see _read).
                conn.task.cancel()
            tasks.append(conn.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE_S)
            if pending:
                # Stuck in drain() on a client that never reads its acks: drop the connection
                # (its unacked events are the client's to resend) so nothing waits on it.
                for writer, conn in list(self._conns.items()):
                    if conn.task in pending:
                        conn.failed = True
                        writer.transport.abort()
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=_CLOSE_GRACE_S)
        await self._close_servers()

    async def _close_servers(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        if self._unix_bound is not None:
            unlink_quietly(self._unix_bound)
            self._unix_bound = None

    @property
    def closing(self) -> bool:
        return self._closing

    # -- reading -----------------------------------------------------------------------------

    def statistics(self) -> IntakeServerStats:
        return IntakeServerStats(
            connections_accepted=self.connections_accepted,
            connections_active=len(self._conns),
            connections_refused=self.connections_refused,
            idle_closed=self.idle_closed,
            unauthorized=self.unauthorized,
            lines=self.lines,
            acked=self.acked,
            half_lines=self.half_lines,
            backpressure_waits=self.backpressure_waits,
            max_write_buffer=self.max_write_buffer,
            decoder=self.decoder.statistics(),
        )

    # -- one connection ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = peer_name(writer)
        if self._closing or len(self._conns) >= self.settings.max_connections:
            self.connections_refused += 1
            self._log.warning(
                "refused", "intake connection refused from %s: %d connections open",
                source, len(self._conns), source=source,
            )
            with contextlib.suppress(ConnectionError):
                writer.write(_TOO_MANY)
            await close_writer(writer, _CLOSE_GRACE_S)
            return
        loop = asyncio.get_running_loop()
        conn = _Conn(asyncio.current_task(), source, loop.time() + self.settings.idle_timeout_s)
        self._conns[writer] = conn
        self.connections_accepted += 1
        try:
            try:
                await self._serve(reader, writer, conn)
            except (ConnectionError, TimeoutError):
                pass  # the client went away (or stalled, counted in _serve): nothing to report
            except asyncio.CancelledError:
                # A property: mypy would keep the narrowing of self._closing from above.
                if not (self.closing or conn.failed):
                    raise
                # Cancelled by close() or by our own acker failing: a clean end, not an error.
                _uncancel()
            except Exception:
                log.exception(
                    "intake connection from %s failed", source, extra={"source": source}
                )
            finally:
                del self._conns[writer]
                # A failed connection (stalled or gone) is dropped at once: its acks cannot go out.
                await close_writer(writer, 0.0 if conn.failed else _CLOSE_GRACE_S)
        except asyncio.CancelledError:
            # Never end cancelled: the stream server's done-callback calls task.exception(),
            # which raises on a cancelled task and logs a raw CancelledError traceback.
            writer.transport.abort()
            _uncancel()

    async def _read(self, reader: asyncio.StreamReader, conn: _Conn) -> bytes | None:
        """The next chunk: b"" at end of stream, None when close() interrupted the wait."""
        conn.reading = True
        try:
            async with asyncio.timeout_at(conn.idle_deadline):
                return await reader.read(READ_CHUNK)
        except TimeoutError:
            self._idle(conn)
            raise
        except asyncio.CancelledError:
            if conn.failed or not self.closing:
                raise
            # Shutdown: stop reading, but the acks still queued for this client go out.
            _uncancel()
            return None
        finally:
            conn.reading = False

    def _idle(self, conn: _Conn) -> None:
        self.idle_closed += 1
        self._log.warning(
            "idle", "intake connection from %s idle for %.0f s: closing",
            conn.source, self.settings.idle_timeout_s, source=conn.source,
        )

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        """The connection's reader: read, split, decode, submit; acks go to :meth:`_acker`.

        Reading does not wait for the commit of what it submitted: the acker task waits for
        commits and writes acks while the next lines are read, so a pipelining client keeps
        several group commits' worth of events in flight. ``PIPELINE_DEPTH`` bounds how many
        chunks may wait for their acks; beyond it (storage slow, or the client not reading its
        acks and the acker stuck in ``drain()``) the reader waits, so the client is not read.
        """
        s = self.settings
        writer.transport.set_write_buffer_limits(high=s.write_high_water)
        splitter = LineSplitter(self.decoder.max_line_bytes)
        authed = self.token is None
        max_batch = s.max_batch
        pending: asyncio.Queue[tuple[list[bytes], int]] = asyncio.Queue(PIPELINE_DEPTH)
        acker = asyncio.create_task(self._acker(writer, pending, conn))
        # A client must authenticate within AUTH_TIMEOUT_S in all, however slowly it drips
        # bytes: otherwise a few silent sockets could hold every connection slot.
        auth_deadline = asyncio.get_running_loop().time() + min(AUTH_TIMEOUT_S, s.idle_timeout_s)
        try:
            while not self._closing:
                if authed:
                    data = await self._read(reader, conn)
                else:
                    try:
                        async with asyncio.timeout_at(auth_deadline):
                            data = await self._read(reader, conn)
                    except TimeoutError:
                        self.unauthorized += 1
                        writer.write(_AUTH_TIMEOUT)
                        await writer.drain()
                        return
                if data is None:
                    break
                if not data:
                    half = splitter.finish()
                    if half is not None and authed:
                        self._half_line(half, conn)
                    break
                items = splitter.feed(data)
                if items:
                    conn.idle_deadline = (
                        asyncio.get_running_loop().time() + s.idle_timeout_s
                    )
                if not authed:
                    if not items:
                        continue  # the auth line is still arriving
                    first = items.pop(0)
                    if not self._authorised(first, conn):
                        writer.write(_UNAUTHORIZED)
                        await writer.drain()
                        return
                    authed = True
                    writer.write(_AUTH_OK)  # nothing is queued yet: it goes out first
                if not items:
                    continue
                acks: list[bytes] = []
                last_seq = 0
                for start in range(0, len(items), max_batch):
                    # Fairness: a loop turn per batch. Needed even for the first one -- read()
                    # returns without suspending while data is buffered, and with storage off
                    # nothing else here suspends, so a flooding client would never let go.
                    await asyncio.sleep(0)
                    last_seq = await self._submit(
                        items[start:start + max_batch], acks, conn, last_seq
                    )
                await pending.put((acks, last_seq))
            await pending.join()  # every ack of what was read is written before closing
        finally:
            acker.cancel()
            (outcome,) = await asyncio.gather(acker, return_exceptions=True)
            if isinstance(outcome, Exception) and not isinstance(
                outcome, ConnectionError | TimeoutError
            ):
                log.error("intake acks to %s failed: %r", conn.source, outcome,
                          extra={"source": conn.source})

    async def _acker(
        self, writer: asyncio.StreamWriter, pending: asyncio.Queue[tuple[list[bytes], int]],
        conn: _Conn,
    ) -> None:
        """Writes the acks of each chunk, in order, once its last journal record is committed."""
        try:
            while True:
                acks, last_seq = await pending.get()
                taken = 1
                # Everything already waiting goes out after one commit wait and one write.
                while not pending.empty():
                    more, seq = pending.get_nowait()
                    acks += more
                    last_seq = max(last_seq, seq)
                    taken += 1
                await self._write_acks(writer, acks, last_seq, conn)
                for _ in range(taken):
                    pending.task_done()
        except asyncio.CancelledError:
            raise
        except BaseException:
            # The reader may be waiting for input or for queue room: it has to stop too.
            conn.failed = True
            if conn.task is not None:
                conn.task.cancel()
            raise

    async def _submit(
        self, batch: list[bytes | Oversized], acks: list[bytes], conn: _Conn, last_seq: int
    ) -> int:
        """Decode and submit ``batch``, appending one ack per line; returns the last journal seq
        (``last_seq`` if none was journalled)."""
        engine = self.engine
        decoder = self.decoder
        persistence = engine.persistence
        # Backpressure: the storage writer's backlog, or wherever the engine sends its input.
        paced = engine.ingest is not None or (
            persistence is not None and persistence.writer is not None
        )
        self.lines += len(batch)
        for item in batch:
            try:
                if isinstance(item, Oversized):
                    raise decoder.reject(
                        "oversized", f"line of at least {item.seen} bytes exceeds the "
                        f"{decoder.max_line_bytes}-byte limit"
                    )
                event = decoder.decode(item)
            except EventError as exc:
                engine.reject(exc.reason)
                self.reject_log.log(
                    exc, source=conn.source, line=item if isinstance(item, bytes) else None
                )
                acks.append(orjson.dumps({"ok": False, "error": str(exc)}) + b"\n")
                continue
            if paced:
                await engine.wait_capacity()
            try:
                seq = engine.submit_nowait(event)
            except EventError as exc:  # refused by the engine (a new symbol past the cap)
                self.reject_log.log(exc, source=conn.source)
                acks.append(orjson.dumps({"ok": False, "error": str(exc)}) + b"\n")
                continue
            if seq is None:
                self._accepted_seq += 1
                seq = self._accepted_seq
            else:
                last_seq = seq
            acks.append(b'{"ok":true,"seq":%d}\n' % seq)
        return last_seq

    async def _write_acks(
        self, writer: asyncio.StreamWriter, acks: list[bytes], last_seq: int, conn: _Conn
    ) -> None:
        if last_seq:
            # the durability point: the journal's commit, or the stream's PubAck (cluster)
            await self.engine.wait_accepted(last_seq)
        writer.write(b"".join(acks))
        self.acked += len(acks)
        buffered = writer.transport.get_write_buffer_size()
        if buffered > self.max_write_buffer:
            self.max_write_buffer = buffered
        if buffered > self.settings.write_high_water:
            self.backpressure_waits += 1
            self.backpressured.set()
        # Blocks only above the high-water mark: a client not reading its acks stops being
        # read. Bounded by the idle timeout, so it cannot hold a connection slot forever.
        try:
            async with asyncio.timeout(self.settings.idle_timeout_s):
                await writer.drain()
        except TimeoutError:
            self._idle(conn)
            raise

    def _authorised(self, first: bytes | Oversized, conn: _Conn) -> bool:
        assert self.token is not None
        offered: object = None
        if isinstance(first, bytes):
            try:
                obj = orjson.loads(first)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is dict:
                offered = obj.get("auth")
        if isinstance(offered, str) and hmac.compare_digest(
            offered.encode("utf-8", "surrogatepass"), self.token.encode("utf-8")
        ):
            return True
        self.unauthorized += 1
        self._log.warning(
            "unauthorized", "intake connection from %s: missing or wrong token",
            conn.source, source=conn.source,
        )
        return False

    def _half_line(self, half: bytes, conn: _Conn) -> None:
        # Nobody is left to read an ack: count and log it. "malformed_json" because a cut
        # line is not JSON one can trust, even if its prefix happens to parse.
        self.half_lines += 1
        exc = self.decoder.reject(
            "malformed_json", f"incomplete line of {len(half)} bytes at disconnect"
        )
        self.engine.reject(exc.reason)
        self.reject_log.log(exc, source=conn.source, line=half)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
