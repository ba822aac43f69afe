"""The rows of one commit: built from live objects, sent to SQLite as one JSON batch per table.

Split from :mod:`engine.storage.writer`, which decides *when* to commit; this module decides
*what* a commit writes and how the rows travel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiosqlite
import msgspec

from ..fsm import RunState, StepState
from ..runs import Run, StepRun
from ..symbols import Phase, SymbolState, SymbolStatus

if TYPE_CHECKING:
    from strategies.broker import PaperBroker

__all__ = ["JOURNAL_SQL", "Rows", "batch"]

_encode = msgspec.json.Encoder().encode
# Enum .value is a Python-level descriptor; rows are built for every change, so map directly.
_PHASE = {p: p.value for p in Phase}
_SSTATUS = {s: s.value for s in SymbolStatus}
_RUN_STATE = {s: s.value for s in RunState}
_STEP_STATE = {s: s.value for s in StepState}


# Each table's rows go to SQLite as ONE parameter: a JSON array of rows, expanded by json_each
# inside the statement. With executemany, the SQLite thread takes the GIL back for every row's
# parameters, and while the event loop is busy each of those handoffs waits out a GIL switch
# interval: a commit of thousands of rows then crawls for as long as the engine is busy. Here
# the rows are encoded on the loop in one C call (msgspec, objects embedded as they are: ticks,
# outputs, raw event JSON) and the statement runs start to end without the GIL. JSON columns
# (payload, tick, output) are taken with ``->`` (their JSON text, stored as a BLOB like every
# JSON column of the schema), the others with ``->>``.
JOURNAL_SQL = (
    "INSERT INTO journal (seq, received_at, type, symbol, payload) "
    "SELECT value->>0, value->>1, value->>2, value->>3, CAST(value->4 AS BLOB) "
    "FROM json_each(?)"
)
_SYMBOLS_SQL = (
    "INSERT INTO symbols (id, name, phase, status, priority, last_processed, last_error, "
    "last_tick, updated_at) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
    "value->>5, value->>6, CAST(nullif(value->7, 'null') AS BLOB), value->>8 "
    "FROM json_each(?) WHERE true "
    "ON CONFLICT (id) DO UPDATE SET phase=excluded.phase, status=excluded.status, "
    "priority=excluded.priority, last_processed=excluded.last_processed, "
    "last_error=excluded.last_error, last_tick=excluded.last_tick, "
    "updated_at=excluded.updated_at"
)
_RUNS_SQL = (
    "INSERT INTO runs (id, workflow, symbol, state, outcome, priority, tick, tick_ts, "
    "created_at, finished_at, error) SELECT value->>0, value->>1, value->>2, value->>3, "
    "value->>4, value->>5, CAST(value->6 AS BLOB), value->>7, value->>8, value->>9, "
    "value->>10 "
    "FROM json_each(?) WHERE true "
    "ON CONFLICT (id) DO UPDATE SET state=excluded.state, "
    "outcome=excluded.outcome, priority=excluded.priority, tick=excluded.tick, "
    "tick_ts=excluded.tick_ts, finished_at=excluded.finished_at, error=excluded.error"
)
_STEPS_SQL = (
    "INSERT INTO steps (run_id, step, state, attempts, output, error, started_at, "
    "finished_at, preemptions) SELECT value->>0, value->>1, value->>2, value->>3, "
    "CASE WHEN value->>9 THEN CAST(value->4 AS BLOB) END, value->>5, value->>6, value->>7, "
    "value->>8 "
    "FROM json_each(?) WHERE true "
    "ON CONFLICT (run_id, step) DO UPDATE SET state=excluded.state, "
    "attempts=excluded.attempts, output=excluded.output, error=excluded.error, "
    "started_at=COALESCE(steps.started_at, excluded.started_at), "
    "finished_at=excluded.finished_at, preemptions=excluded.preemptions"
)


def _text(value: str | None) -> str | None:
    """A free-text column (an error, from any exception a strategy raises): SQLite's ``->>``
    ends a string at a NUL, and a lone surrogate cannot be encoded at all -- spell both out."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode()
    return value


def batch(rows: list[Any]) -> str:
    """One table's rows as a JSON array (text: SQLite 3.45+ would read a BLOB as JSONB)."""
    return _encode(rows).decode()


def _steps_batch(rows: list[list[Any]]) -> str:
    try:
        return batch(rows)
    except (TypeError, msgspec.EncodeError, UnicodeDecodeError):
        pass
    for row in rows:  # some output cannot be encoded: find it, store it as missing
        try:
            _encode(row[4])
        except (TypeError, msgspec.EncodeError):
            row[4] = None
            row[9] = False  # recovery re-runs this run from its first step
    return batch(rows)


class Rows:
    """Rows of one commit, built from live objects at one instant."""

    __slots__ = (
        "accounts",
        "batches",
        "fills",
        "now",
        "orders",
        "positions",
        "runs",
        "steps",
        "symbols",
    )

    def __init__(self, now: float) -> None:
        self.now = now
        self.symbols: list[tuple[Any, ...]] = []
        self.runs: list[tuple[Any, ...]] = []
        self.steps: list[list[Any]] = []
        self.orders: list[tuple[Any, ...]] = []
        self.fills: list[tuple[Any, ...]] = []
        self.positions: list[tuple[Any, ...]] = []
        self.accounts: list[tuple[Any, ...]] = []
        self.batches: list[tuple[str, str]] = []

    def symbol(self, s: SymbolState) -> None:
        self.symbols.append(
            (s.id, s.name, _PHASE[s.phase], _SSTATUS[s.status], s.priority, s.last_processed,
             _text(s.last_error), s.last_tick, self.now)
        )

    def run(self, r: Run) -> None:
        if r.suspended:
            # Cut by the shutdown drain: recorded as such, but left in flight so the next start
            # resumes it under the same id instead of redoing its work under a new one.
            self.runs.append(
                (r.id, r.workflow.name, r.symbol.name, "running", None, r.priority,
                 r.tick, r.tick.ts, self.now, None,
                 _text(f"{r.error or 'shutdown'}; resumed at the next start"))
            )
            return
        finished = self.now if r.state.terminal else None
        self.runs.append(
            (r.id, r.workflow.name, r.symbol.name, _RUN_STATE[r.state], r.outcome, r.priority,
             r.tick, r.tick.ts, self.now, finished, _text(r.error))
        )

    def step(self, run_id: int, st: StepRun) -> None:
        # The output goes into the batch as it is; _steps_batch() copes with one that cannot
        # be encoded. The last column says whether it could.
        self.steps.append(
            [run_id, st.spec.name, _STEP_STATE[st.state], st.attempts, st.output, _text(st.error),
             self.now if st.started_at is not None else None,
             self.now if st.state.terminal else None, st.preemptions, True]
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
        """Encode the JSON batches now, on the loop, before the transaction opens: what is
        written is the objects' state at this instant (an output a later step mutates is not
        affected), and an encoding error cannot leave a transaction open."""
        batches = []
        if journal:
            batches.append((JOURNAL_SQL, batch(journal)))
        if self.symbols:
            batches.append((_SYMBOLS_SQL, batch(self.symbols)))
        if self.runs:
            batches.append((_RUNS_SQL, batch(self.runs)))
        if self.steps:
            batches.append((_STEPS_SQL, _steps_batch(self.steps)))
        self.batches = batches

    async def write(self, conn: aiosqlite.Connection) -> None:
        for sql, text in self.batches:
            await conn.execute(sql, (text,))
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
