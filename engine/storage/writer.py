"""The one writer task: group commits of everything the engine changed.

The hot path never waits on disk: the symbol table and the coordinator log what changed (in
compiled code, a flag test per change; a symbol ticked a thousand times between commits is
written once), completed runs leave their records as they end, and intake appends journal
records. The writer task wakes on the first change, lets more gather for ``commit_interval``
(or until ``batch_max`` journal records), takes the logs and builds the rows from the objects'
state *at that instant* -- a consistent snapshot, since nothing else runs on the loop
meanwhile -- and commits them in one transaction.

When more than ``backlog_max`` records wait, :meth:`wait_capacity` makes intake wait (sources
slow down) instead of growing memory or dropping state; each such wait is counted.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import aiosqlite
import msgspec

from engine.core.errors import StorageError
from engine.core.records import JournalLog
from engine.core.symbols import SymbolTable
from fastpath.latency import LatencyHistogram

from .rows import Journal, Rows

if TYPE_CHECKING:
    from engine.core.coordinator import Coordinator
    from engine.core.orders import Broker

__all__ = ["BATCH_BOUNDS", "StorageWriter", "WriterStatistics"]

log = logging.getLogger("tickflow.storage")
BATCH_BOUNDS: Final[tuple[int, ...]] = (1, 10, 100, 1_000, 10_000, 100_000)
"""Upper bounds of the records-per-commit buckets (:attr:`StorageWriter.batch_counts`)."""


class WriterStatistics(msgspec.Struct, frozen=True, kw_only=True):
    commits: int
    records: int  # changes committed: journal records, symbols, runs, orders, dropped runs
    backlog: int
    backlog_max: int
    committed_seq: int
    backpressure_waits: int
    last_commit_s: float
    pruned: int
    commit_errors: int = 0  # a failed commit stops the writer: 0 or 1
    prune_errors: int = 0


class StorageWriter:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        path: str,
        broker: Broker,
        wall: Callable[[], float],
        next_seq: int,
        mono: Callable[[], float] = time.monotonic,
        commit_interval_s: float = 0.002,
        gather_max_s: float = 0.02,
        batch_max: int = 5000,
        backlog_max: int = 50_000,
        retention_s: float = 86_400.0,
        prune_interval_s: float = 60.0,
        gil_switch_s: float = 0.0001,
        gil_switch_after_s: float = 0.002,
    ) -> None:
        self.conn = conn
        self.path = path
        self.broker = broker
        self.wall = wall
        self.mono = mono  # the engine's clock: runs and steps carry its instants
        self.commit_interval_s = commit_interval_s
        self.gather_max_s = max(gather_max_s, commit_interval_s)
        self._loaded = False  # changes arrived while the last commit was being written
        self.batch_max = batch_max
        self.backlog_max = backlog_max
        self.retention_s = retention_s
        self.prune_interval_s = prune_interval_s
        self.gil_switch_s = gil_switch_s
        self.gil_switch_after_s = gil_switch_after_s
        # The journal, encoded as events are accepted, and the count of changes to commit.
        self._log = JournalLog(next_seq - 1, self._signal)
        self._log.offset = wall() - mono()  # wall minus engine time; renewed at each commit
        self._committed_seq = next_seq - 1
        self._symbol_source: SymbolTable | None = None
        self._run_source: Coordinator | None = None
        self._orders: list[tuple[Any, int]] = []
        self._positions: set[str] = set()
        self.dropped_runs: list[int] = []  # stored runs recovery could not resume
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closed = False
        self._stop = False
        self._commit_lock = asyncio.Lock()
        self._broken: BaseException | None = None
        self.commits = 0
        self.records = 0
        self.backpressure_waits = 0
        self.last_commit_s = 0.0
        self.pruned = 0
        self.commit_errors = 0
        self.prune_errors = 0
        # How long each commit took (building its rows excluded) and how many records it
        # held: one bucket increment each per commit, read by the metrics collector.
        self.commit_duration = LatencyHistogram()
        self.batch_counts = [0] * (len(BATCH_BOUNDS) + 1)  # the last: above every bound

    # -- the hot path: O(1), never awaits ---------------------------------------------------

    def journal(self, event_type: str, symbol: str, payload: bytes, received_at: float) -> int:
        """``payload``: the event as JSON (it is embedded in the batch as it is)."""
        return int(self._log.add_raw(event_type, symbol, payload, received_at))

    @property
    def journal_event(self) -> Callable[[str, Any, float], int]:
        """``journal_event(type, event, now)`` journals an event object (a msgspec struct)
        accepted at engine time ``now`` and returns its seq: stamped with wall time derived
        from ``now`` (not read again) and encoded at once, in compiled code (intake calls it
        for every event)."""
        add: Callable[[str, Any, float], int] = self._log.add
        return add

    def watch(self, symbols: SymbolTable, coordinator: Coordinator | None = None) -> None:
        """Write what changes in ``symbols`` and ``coordinator``'s runs: both keep a change log
        (a flag test per change, in compiled code) and wake the writer when it stops being
        empty; the writer takes the logs at each commit."""
        self._symbol_source = symbols
        symbols.track(self._log.note)
        if coordinator is not None:
            self._run_source = coordinator
            coordinator.track_runs(self._log.note)
            coordinator.record_offset = self._log.offset

    def order(self, outcome: Any, run_id: int) -> None:
        """An order-sending step finished: record the order and its fill (if any)."""
        self._orders.append((outcome, run_id))
        fill = getattr(outcome, "fill", None)
        if fill is not None:
            self._positions.add(fill.symbol)
        self._log.note()

    @property
    def backlog(self) -> int:
        """Records waiting for a commit (changes to one object between commits count once)."""
        symbols, runs = self._symbol_source, self._run_source
        return (
            self._log.count + len(self._orders)
            + (0 if symbols is None else symbols.changed)
            + (0 if runs is None else runs.changed_runs)
        )

    @property
    def last_seq(self) -> int:
        return int(self._log.seq)

    def _signal(self, n: int) -> None:
        """The change count (an upper bound of the backlog: repeated changes to one object are
        written once) reached the journal log's ``signal_at``: wake the writer, tell it the
        batch is full, or check the backlog bound -- then set the count at which to look
        again."""
        if n == 1:
            self._wake.set()
        if n >= self.batch_max and not self._full.is_set():
            self._full.set()
        if n >= self.backlog_max and self._room.is_set() and self.backlog >= self.backlog_max:
            self._room.clear()
        ahead = [t for t in (self.batch_max, self.backlog_max) if t > n]
        if n >= self.backlog_max:
            # Past the bound without reaching it (repeated changes to one object count once):
            # look at the backlog again soon, whatever else is ahead.
            ahead.append(n + max(1, self.backlog_max // 16))
        self._log.signal_at = min(ahead)

    # -- waiting ----------------------------------------------------------------------------

    async def wait_capacity(self) -> None:
        """Backpressure for intake: return once the backlog is below its bound."""
        if not self._room.is_set():
            self.backpressure_waits += 1
            await self._room.wait()

    async def wait_committed(self, seq: int) -> None:
        """Wait until journal record ``seq`` is committed (the durability point of an event)."""
        if seq <= self._committed_seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut))
        await fut

    # -- the writer task --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Let :meth:`run_forever` finish the commit in progress, commit the rest, and return.
        (Cancelling it could cut a transaction in half.)"""
        self._stop = True
        self._wake.set()
        self._full.set()  # a batch gathering now stops gathering

    async def run_forever(self) -> None:
        """The writer task (owned by the engine's task group); errors propagate to it."""
        next_prune = time.monotonic() + self.prune_interval_s
        while not self._stop_requested():  # checked before waiting: commit() clears wake-ups
            await self._wake.wait()
            if self._stop_requested():
                break
            if self.backlog < self.batch_max:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.gather_s()):
                        await self._full.wait()
            await self.commit()
            # Changes that arrived while it was being written (they set the wake-up the commit
            # cleared) mean the writer is committing back to back: under load.
            self._loaded = self._wake.is_set()
            if time.monotonic() >= next_prune:
                await self.prune()
                next_prune = time.monotonic() + self.prune_interval_s
        await self.commit()

    def gather_s(self) -> float:
        """How long the next batch gathers before its commit: ``commit_interval_s``, or under
        load -- when changes arrived while the last commit was being written -- as long as
        that commit took, up to ``gather_max_s``.

        Each commit costs the event loop something whatever its size -- taking the logs,
        writing every symbol that changed since the last one (a symbol whose run spans two
        commits is written twice), handing the statement to the SQLite thread and taking the
        result back -- so under load fewer, larger commits leave the loop more time for runs.
        Gathering as long as the last commit took keeps the SQLite thread busy at most about
        half the time, and an event then waits for its commit at most about three commits'
        time. Not at light load, slow commits or not (``synchronous = "full"``, a slow disk):
        an event that arrives while nothing is being written is committed after
        ``commit_interval_s``."""
        last = self.last_commit_s
        if not self._loaded or last <= self.commit_interval_s:
            return self.commit_interval_s
        return min(last, self.gather_max_s)

    def _stop_requested(self) -> bool:
        return self._stop

    async def flush(self) -> None:
        """Commit everything recorded so far, now."""
        await self.commit()

    async def commit(self) -> None:
        # One transaction at a time: the writer task and a flush() may both want to commit.
        async with self._commit_lock:
            await self._commit()

    async def _commit(self) -> None:
        if self._broken is not None:
            raise StorageError(f"{self.path}: an earlier commit failed ({self._broken}); "
                               "not writing anything after it")
        self._wake.clear()
        self._full.clear()
        journal = Journal(*self._log.take())
        symbols = [] if self._symbol_source is None else self._symbol_source.take_changed()
        source = self._run_source
        runs = [] if source is None else source.take_changed_runs()
        finished = None if source is None else source.take_finished()
        orders, self._orders = self._orders, []
        positions, self._positions = self._positions, set()
        dropped, self.dropped_runs = self.dropped_runs, []
        count = (
            journal.records + len(symbols) + len(runs) + len(orders) + len(dropped)
            + (0 if finished is None else finished.count)
        )
        if not count:
            return
        now = self.wall()
        offset = self._log.offset = now - self.mono()
        if source is not None:
            source.record_offset = offset  # for the records made as runs end
        rows = Rows(now, offset, None if source is None else source.routes)
        rows.add_symbols(symbols)
        rows.add_runs(runs)
        rows.finished = finished
        for outcome, run_id in orders:
            rows.order(outcome, run_id)
        if orders:
            rows.account(self.broker, positions)
        # Run ids and journal seqs are never reused, even once retention has pruned every row
        # that carried them: a reused run id would reuse its order steps' client order ids. So
        # every run id handed out so far counts, its run stored or not (one that crashed before
        # it was stored must not lend its id to another after a restart).
        rows.encode(journal, None if source is None else source.last_run_id)
        started = time.perf_counter()
        transaction = asyncio.ensure_future(self._transaction(rows, dropped, now))
        switch = _GilSwitch(
            asyncio.get_running_loop(), self.gil_switch_s, self.gil_switch_after_s
        )
        transaction.add_done_callback(switch.restore)
        try:
            await asyncio.shield(transaction)
        except asyncio.CancelledError:
            # SQLite runs COMMIT in its own thread: a cancelled commit still completes (or
            # fails) there. Wait for it, so the next commit never starts inside it, then stop.
            if not transaction.done():
                await asyncio.wait([transaction])
            if not transaction.cancelled() and transaction.exception() is None:
                self._committed(journal, count, started)
            raise
        self._committed(journal, count, started)

    async def _transaction(self, rows: Rows, dropped: list[int], now: float) -> None:
        conn = self.conn
        # The common commit is one statement, run by SQLite as its own transaction (the
        # connection is in autocommit mode), all of it without the GIL; orders and dropped runs
        # add statements, and then one explicit transaction holds them all.
        explicit = bool(dropped) or not rows.single
        try:
            if explicit:
                await conn.execute("BEGIN IMMEDIATE")
            await rows.write(conn)
            if dropped:
                await conn.executemany(
                    "UPDATE run_rows SET state='cancelled', outcome='cancelled', finished_at=?, "
                    "error='workflow no longer configured' WHERE id=?",
                    [(now, run_id) for run_id in dropped],
                )
            if explicit:
                await conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # none is open after a lone statement
                await conn.execute("ROLLBACK")
            # Its records are gone with it: committing later batches on top would leave a hole
            # (later state without the runs, orders or fills that led to it). Stop writing.
            self._broken = exc
            self.commit_errors += 1
            self._fail_waiters(exc)
            raise StorageError(f"{self.path}: commit failed, stopping: {exc}") from exc

    def _committed(
        self, journal: Journal, count: int, started: float
    ) -> None:
        elapsed = self.last_commit_s = time.perf_counter() - started
        self.commits += 1
        self.records += count
        self.commit_duration.record(elapsed)
        self.batch_counts[bisect.bisect_left(BATCH_BOUNDS, count)] += 1
        if journal.records:
            self._committed_seq = journal.last_seq
            self._wake_waiters()
        if self.backlog < self.backlog_max:
            self._room.set()

    async def close(self) -> None:
        """Commit what is left and close the connection."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._broken is None:
                await self.commit()
        finally:
            await self.conn.close()

    async def prune(self) -> int:
        """Delete journal blocks, run blocks and finished run rows older than the retention
        horizon, in small batches so a large backlog never holds the write lock for long.
        Returns the rows deleted (a block counts once)."""
        horizon = self.wall() - self.retention_s
        total = 0
        statements = (
            "DELETE FROM journal_blocks WHERE first_seq IN "
            "(SELECT first_seq FROM journal_blocks WHERE last_at < ? LIMIT 1000)",
            "DELETE FROM run_blocks WHERE block IN "
            "(SELECT block FROM run_blocks WHERE finished_at < ? LIMIT 1000)",
            "DELETE FROM run_rows WHERE id IN (SELECT id FROM run_rows WHERE finished_at < ? "
            "AND state IN ('completed','failed','cancelled') LIMIT 1000)",
        )
        try:
            for sql in statements:
                while True:
                    cur = await self.conn.execute(sql, (horizon,))
                    deleted = cur.rowcount
                    await cur.close()
                    total += max(deleted, 0)
                    if deleted < 1000:
                        break
                    await asyncio.sleep(0)  # let commits of fresh work go first
        except sqlite3.Error as exc:
            self.prune_errors += 1
            raise StorageError(f"{self.path}: retention pruning failed: {exc}") from exc
        self.pruned += total
        return total

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            commits=self.commits,
            records=self.records,
            backlog=self.backlog,
            backlog_max=self.backlog_max,
            committed_seq=self._committed_seq,
            backpressure_waits=self.backpressure_waits,
            last_commit_s=self.last_commit_s,
            pruned=self.pruned,
            commit_errors=self.commit_errors,
            prune_errors=self.prune_errors,
        )

    def _wake_waiters(self) -> None:
        done = self._committed_seq
        keep = []
        for seq, fut in self._waiters:
            if seq <= done:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((seq, fut))
        self._waiters = keep

    def _fail_waiters(self, exc: BaseException) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(StorageError(f"{self.path}: commit failed: {exc}"))
        self._waiters = []


class _GilSwitch:
    """Shortens the interpreter's GIL switch interval once a transaction has been in flight for
    ``after`` (2 ms; at light load a commit takes about 1 ms, so one still going is being
    starved), until it ends.

    The SQLite thread needs the GIL around each statement (to take the request, to bind its
    parameters, to report back), and a thread waiting for the GIL only gets it from a busy
    event loop when the interpreter forces a switch: after 5 ms by default. A commit of a dozen
    statements then took longer than the burst of work waiting for it, and under sustained load
    the writer fell behind (measured: 0.26x of storage-off throughput with 5 ms, 0.42x with
    0.1 ms). Not from the start of every commit: any thread waiting for the GIL takes it then,
    a strategy step in the thread pool too, and at light load that only added latency
    (measured on the default config: run p99 0.52 -> 0.96 ms). Measured on the storage
    benchmark's steady workload, waiting 4 ms cost a sixth of the throughput, 2 ms little.
    """

    __slots__ = ("_handle", "_interval", "_previous")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, after: float) -> None:
        self._interval = interval
        self._previous: float | None = None
        self._handle: asyncio.TimerHandle | None = loop.call_later(after, self._shorten)

    def _shorten(self) -> None:
        self._handle = None
        self._previous = sys.getswitchinterval()
        sys.setswitchinterval(min(self._interval, self._previous))

    def restore(self, _: object = None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._previous is not None:
            sys.setswitchinterval(self._previous)
            self._previous = None
