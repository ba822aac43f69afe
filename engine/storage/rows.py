"""The rows of one commit: built from live objects, sent as a few statements.

Split from :mod:`engine.storage.writer`, which decides *when* to commit; this module decides
*what* a commit writes and how the rows travel. The records themselves are built by
:mod:`fastpath.records` (compiled).

How rows travel, and why (measured; docs/storage.md, "Cost"): whatever the SQLite thread does
while holding the GIL is taken from the event loop, and binding parameters holds it -- about a
tenth of a microsecond per value, two dozen values per run with a row per run and symbol. So:

* completed runs (nearly all runs) go as ONE JSON array per commit, stored as it is
  (`run_blocks`): nothing to bind or expand per run. Their records are made as they end
  (:class:`fastpath.records.FinishedRuns`), so finished runs are freed at once;
* accepted events likewise (`journal_blocks`);
* changed symbols go as one JSON object, keyed "id:name", expanded by ``json_each`` inside an
  upsert, each symbol's record stored as the JSON text it comes out as (`symbol_rows`): parsing
  it again column by column cost the SQLite thread ~7 us a symbol (SQLite 3.40 has no parse
  cache), most of its time under load;
* the few runs that need a row of their own (in flight with progress, failed, cancelled) are
  bound as a multi-row statement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import aiosqlite
import msgspec

from fastpath.records import FinishedRuns, run_rows, steps_json, symbol_batch

from ..runs import Run
from ..symbols import SymbolState

if TYPE_CHECKING:
    from strategies.broker import PaperBroker

__all__ = ["CHUNKS", "JOURNAL_SQL", "Journal", "Rows", "Table"]

_encode = msgspec.json.Encoder().encode


class Journal(NamedTuple):
    """The journal records of one commit (:meth:`fastpath.records.JournalLog.take`)."""

    records: int
    first_seq: int
    last_seq: int
    first_at: float
    last_at: float
    events: str  # the records, as one JSON array


# A multi-row statement's row count is padded up to one of a few sizes (padding rows are all
# NULL and filtered out), so each table keeps a few prepared statements in the connection's
# cache.
CHUNKS = (8, 64, 512)


class Table:
    """One table's multi-row INSERT (or upsert), for each padded size in :data:`CHUNKS`."""

    __slots__ = ("columns", "sql")

    def __init__(self, insert: str, columns: int, tail: str = "") -> None:
        self.columns = columns
        one = "(" + ",".join("?" * columns) + ")"
        self.sql = {
            n: f"{insert} SELECT * FROM (VALUES {','.join([one] * n)}) "
               f"WHERE column1 IS NOT NULL {tail}"
            for n in CHUNKS
        }

    def statements(self, flat: list[Any]) -> list[tuple[str, list[Any]]]:
        """The statements writing ``flat`` (the rows' values, one row after another)."""
        out = []
        columns = self.columns
        step = CHUNKS[-1] * columns
        for first in range(0, len(flat), step):
            params = flat[first:first + step]
            rows = len(params) // columns
            size = next(n for n in CHUNKS if n >= rows)
            if size > rows:
                params.extend([None] * ((size - rows) * columns))
            out.append((self.sql[size], params))
        return out


JOURNAL_SQL = (
    "INSERT INTO journal_blocks (first_seq, last_seq, first_at, last_at, events) "
    "VALUES (?, ?, ?, ?, ?)"
)
_RUN_BLOCK_SQL = (
    "INSERT INTO run_blocks (first_id, last_id, finished_at, runs, records) VALUES (?, ?, ?, ?, ?)"
)
_UNROW_SQL = "DELETE FROM run_rows WHERE id IN (SELECT value FROM json_each(?))"
# The batch is a JSON object keyed "id:name" (the id's digits end at the first colon): each
# record goes in as the text json_each hands out, never parsed again column by column.
_SYMBOLS_SQL = (
    "INSERT INTO symbol_rows (id, name, record, updated_at) "
    "SELECT CAST(key AS INTEGER), substr(key, instr(key, ':') + 1), value, ?2 "
    "FROM json_each(?1) WHERE true "
    "ON CONFLICT (id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at"
)
RUNS = Table(
    "INSERT INTO run_rows (id, workflow, symbol, state, outcome, priority, tick, tick_ts, "
    "created_at, finished_at, error, steps)", 12,
    "ON CONFLICT (id) DO UPDATE SET state=excluded.state, outcome=excluded.outcome, "
    "priority=excluded.priority, tick=excluded.tick, tick_ts=excluded.tick_ts, "
    "finished_at=excluded.finished_at, error=excluded.error, steps=excluded.steps",
)


class Rows:
    """Rows of one commit, built from live objects at one instant.

    ``offset`` turns the engine's monotonic instants (when a run was triggered, when a step
    started and ended) into wall-clock time, which is what people and retention read.
    """

    __slots__ = (
        "accounts",
        "fills",
        "finished",
        "now",
        "offset",
        "orders",
        "positions",
        "routes",
        "runs",
        "statements",
        "symbols",
    )

    def __init__(
        self,
        now: float,
        offset: float = 0.0,
        routes: Callable[[int], tuple[Any, ...]] | None = None,
    ) -> None:
        self.now = now
        self.offset = offset
        self.routes = routes
        self.symbols = ""  # the changed symbols' records, one JSON object (symbol_batch)
        self.runs: list[tuple[Any, ...]] = []  # runs with a row of their own
        self.finished: FinishedRuns | None = None
        self.orders: list[tuple[Any, ...]] = []
        self.fills: list[tuple[Any, ...]] = []
        self.positions: list[tuple[Any, ...]] = []
        self.accounts: list[tuple[Any, ...]] = []
        self.statements: list[tuple[str, Any]] = []

    def add_symbols(self, states: list[SymbolState]) -> None:
        if states:
            self.symbols = symbol_batch(states)

    def add_runs(self, runs: list[Run]) -> None:
        self.runs = run_rows(runs, self.offset, self.routes)

    def order(self, outcome: Any, run_id: int) -> None:
        status = getattr(outcome, "status", "error")
        coid = getattr(outcome, "client_order_id", None)
        if coid is None:
            return
        side = getattr(outcome, "side", None)
        self.orders.append(
            (coid, run_id, getattr(outcome, "symbol", ""), str(side or ""),
             float(getattr(outcome, "qty", 0.0)), str(status), self.now)
        )
        fill = getattr(outcome, "fill", None)
        if fill is not None:
            self.fills.append(
                (fill.client_order_id, fill.symbol, str(fill.side), fill.qty, fill.price,
                 fill.last_price, fill.notional, fill.fee, fill.realized_pnl, fill.ts)
            )

    def account(self, broker: PaperBroker, symbols: set[str]) -> None:
        for name in symbols:
            p = broker.position(name)
            self.positions.append((p.symbol, p.qty, p.avg_cost, p.realized_pnl))
        snap = broker.statistics()
        self.accounts.append(
            (1, snap.cash, snap.fees_paid, snap.orders, snap.fills, snap.duplicates, self.now)
        )

    def encode(self, journal: Journal) -> None:
        """Encode and bind the rows now, on the loop, before the transaction opens: what is
        written is the objects' state at this instant (a later change to an output does not
        leak in), and an encoding error cannot leave a transaction open."""
        statements: list[tuple[str, Any]] = []
        if journal.records:
            statements.append((JOURNAL_SQL, (
                journal.first_seq, journal.last_seq, journal.first_at, journal.last_at,
                journal.events,
            )))
        if self.symbols:
            statements.append((_SYMBOLS_SQL, (self.symbols, self.now)))
        finished = self.finished
        if finished is not None and finished.count:
            statements.append((_RUN_BLOCK_SQL, (
                finished.first_id, finished.last_id, finished.finished_at,
                finished.count, finished.block(),
            )))
            if finished.unrow:
                statements.append((_UNROW_SQL, (_encode(finished.unrow).decode(),)))
        if self.runs:
            flat: list[Any] = []
            for row in self.runs:
                flat.extend(row[:11])
                flat.append(steps_json(row[11]))
            statements += RUNS.statements(flat)
        self.statements = statements

    async def write(self, conn: aiosqlite.Connection) -> None:
        for sql, params in self.statements:
            await conn.execute(sql, params)
        if self.orders:
            # A retried order returns its original fill: the first record stands.
            await conn.executemany(
                "INSERT OR IGNORE INTO orders VALUES (?,?,?,?,?,?,?)", self.orders
            )
        if self.fills:
            await conn.executemany(
                "INSERT OR IGNORE INTO fills VALUES (?,?,?,?,?,?,?,?,?,?)", self.fills
            )
        if self.positions:
            await conn.executemany(
                "INSERT INTO positions VALUES (?,?,?,?) ON CONFLICT (symbol) DO UPDATE SET "
                "qty=excluded.qty, avg_cost=excluded.avg_cost, "
                "realized_pnl=excluded.realized_pnl",
                self.positions,
            )
        if self.accounts:
            await conn.executemany(
                "INSERT INTO account VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
                "cash=excluded.cash, fees_paid=excluded.fees_paid, orders=excluded.orders, "
                "fill_count=excluded.fill_count, duplicates=excluded.duplicates, "
                "updated_at=excluded.updated_at",
                self.accounts,
            )
