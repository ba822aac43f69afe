"""The rows of one commit: built from live objects, bound to a few multi-row statements.

Split from :mod:`engine.storage.writer`, which decides *when* to commit; this module decides
*what* a commit writes and how the rows travel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiosqlite
import msgspec

from ..fsm import RunState, StepState
from ..runs import Run
from ..symbols import Phase, SymbolState, SymbolStatus

if TYPE_CHECKING:
    from strategies.broker import PaperBroker

__all__ = ["CHUNKS", "JOURNAL_SQL", "Rows", "Table", "steps_json"]

_encode = msgspec.json.Encoder().encode
# Enum .value is a Python-level descriptor; rows are built for every change, so map directly.
_PHASE = {p: p.value for p in Phase}
_SSTATUS = {s: s.value for s in SymbolStatus}
_RUN_STATE = {s: s.value for s in RunState}
_STEP_STATE = {s: s.value for s in StepState}
_PENDING = StepState.PENDING
_COMPLETED = StepState.COMPLETED


# Rows reach SQLite as multi-row statements: ``INSERT ... SELECT * FROM (VALUES (?,..),(?,..)..)``
# with up to 512 rows bound at once. The SQLite thread binds a whole statement's parameters in one
# C loop and then runs it without the GIL: a commit is a handful of GIL hand-overs, not one per
# row (with ``executemany``, every row's parameters waited for the GIL, and a busy event loop only
# yields it at forced switches -- a commit of thousands of rows crawled while the engine was busy).
# Before v3 the rows travelled as one JSON array expanded by ``json_each``; measured, SQLite 3.40
# re-parses a row's JSON for every column read from it (11 us for a run row against 4 us bound).
# A statement's row count is padded up to one of a few sizes (padding rows are all NULL and
# filtered out), so each table keeps a few prepared statements in the connection's cache.
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

    def statements(self, rows: list[tuple[Any, ...]]) -> list[tuple[str, list[Any]]]:
        out = []
        big = CHUNKS[-1]
        for first in range(0, len(rows), big):
            part = rows[first:first + big]
            size = next(n for n in CHUNKS if n >= len(part))
            params = [value for row in part for value in row]
            if size > len(part):
                params.extend([None] * ((size - len(part)) * self.columns))
            out.append((self.sql[size], params))
        return out


JOURNAL_SQL = (
    "INSERT INTO journal_blocks (first_seq, last_seq, first_at, last_at, events) "
    "VALUES (?, ?, ?, ?, ?)"
)
SYMBOLS = Table(
    "INSERT INTO symbols (id, name, phase, status, priority, last_processed, last_error, "
    "last_tick, updated_at)", 9,
    "ON CONFLICT (id) DO UPDATE SET phase=excluded.phase, status=excluded.status, "
    "priority=excluded.priority, last_processed=excluded.last_processed, "
    "last_error=excluded.last_error, last_tick=excluded.last_tick, "
    "updated_at=excluded.updated_at",
)
RUNS = Table(
    "INSERT INTO runs (id, workflow, symbol, state, outcome, priority, tick, tick_ts, "
    "created_at, finished_at, error, steps)", 12,
    "ON CONFLICT (id) DO UPDATE SET state=excluded.state, outcome=excluded.outcome, "
    "priority=excluded.priority, tick=excluded.tick, tick_ts=excluded.tick_ts, "
    "finished_at=excluded.finished_at, error=excluded.error, steps=excluded.steps",
)


def _text(value: str | None) -> str | None:
    """A free-text column (an error, from any exception a strategy raises): a NUL is spelled
    out (SQLite's text functions end a string there), and so is a lone surrogate (it cannot be
    encoded at all)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode()
    return value


def steps_json(rows: list[list[Any]]) -> str:
    """A run's steps as one JSON array (its ``steps`` column). An output msgspec cannot encode
    is stored as missing -- the last field says so, and recovery re-runs such a run from its
    first step -- without costing the rest."""
    try:
        return _encode(rows).decode()
    except (TypeError, msgspec.EncodeError, UnicodeError):
        pass
    for row in rows:
        try:
            _encode(row[7]).decode()
        except (TypeError, msgspec.EncodeError, UnicodeError):
            row[7] = None
            row[8] = False
    return _encode(rows).decode()


class Rows:
    """Rows of one commit, built from live objects at one instant.

    ``offset`` turns the engine's monotonic instants (when a run was triggered, when a step
    started and ended) into wall-clock time, which is what people and retention read.
    """

    __slots__ = (
        "accounts",
        "fills",
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
        self.symbols: list[tuple[Any, ...]] = []
        self.runs: list[tuple[Any, ...]] = []
        self.orders: list[tuple[Any, ...]] = []
        self.fills: list[tuple[Any, ...]] = []
        self.positions: list[tuple[Any, ...]] = []
        self.accounts: list[tuple[Any, ...]] = []
        self.statements: list[tuple[str, Any]] = []

    def symbol(self, s: SymbolState) -> None:
        tick = s.last_tick
        self.symbols.append(
            (s.id, s.name, _PHASE[s.phase], _SSTATUS[s.status], s.priority, s.last_processed,
             _text(s.last_error), None if tick is None else _encode(tick), self.now)
        )

    def run(self, r: Run) -> None:
        routes = self.routes
        if (
            routes is not None and not r.completed and not r.suspended
            and not r.state.terminal and len(routes(r.symbol.priority)) <= 1
        ):
            # In flight with nothing done yet, on a symbol routed to this workflow alone: the
            # symbol row committed with it (data_ready, or processing with no run to resume)
            # makes recovery trigger it again with the same tick, so its row would only cost.
            # Where routes overlap, a re-trigger would also redo the other workflows' finished
            # runs for this tick: such runs are written from the start.
            return
        offset = self.offset
        steps = []
        for st in r.steps:
            state = st.state
            if state is _PENDING and not st.attempts and not st.preemptions:
                continue  # never ran: nothing to say about it
            started, finished = st.started_at, st.finished_at
            steps.append([
                st.spec.name, _STEP_STATE[state], st.attempts, st.preemptions,
                None if started is None else started + offset,
                None if finished is None or not state.terminal else finished + offset,
                _text(st.error), st.output if state is _COMPLETED else None, True,
            ])
        created = r.trigger_at + offset
        if r.suspended:
            # Cut by the shutdown drain: recorded as such, but left in flight so the next start
            # resumes it under the same id instead of redoing its work under a new one.
            self.runs.append(
                (r.id, r.workflow.name, r.symbol.name, "running", None, r.priority,
                 _encode(r.tick), r.tick.ts, created, None,
                 _text(f"{r.error or 'shutdown'}; resumed at the next start"), steps_json(steps))
            )
            return
        finished = r.finished_at
        self.runs.append(
            (r.id, r.workflow.name, r.symbol.name, _RUN_STATE[r.state], r.outcome, r.priority,
             _encode(r.tick), r.tick.ts, created,
             None if finished is None or not r.state.terminal else finished + offset,
             _text(r.error), steps_json(steps))
        )

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

    def encode(self, journal: list[Any]) -> None:
        """Encode and bind the rows now, on the loop, before the transaction opens: what is
        written is the objects' state at this instant (a later change to an output does not
        leak in), and an encoding error cannot leave a transaction open."""
        statements: list[tuple[str, Any]] = []
        if journal:
            statements.append((JOURNAL_SQL, (
                journal[0][0], journal[-1][0], journal[0][1], journal[-1][1],
                _encode(journal).decode(),
            )))
        statements += SYMBOLS.statements(self.symbols)
        statements += RUNS.statements(self.runs)
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
