"""Reading state back at start: symbols, the broker's books, and runs left in flight.

The books come back as a :class:`~engine.core.orders.BrokerBooks`, which the daemon hands to
its broker's ``restore`` (the :class:`~engine.core.orders.Broker` protocol): storage never
builds a broker itself.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import aiosqlite
import msgspec

from engine.core.errors import StorageError
from engine.core.events import Tick
from engine.core.layout import StepRecord
from engine.core.orders import BrokerBooks
from engine.core.symbols import SymbolRow, SymbolTable

__all__ = ["LoadedState", "RecoveryReport", "StoredRun", "load_state"]

_decode_tick = msgspec.json.Decoder(Tick).decode
_decode_steps = msgspec.json.Decoder(list[StepRecord]).decode


class StoredStep(msgspec.Struct, frozen=True):
    name: str
    output: Any
    attempts: int
    encodable: bool
    started_us: int | None = None  # microseconds after the run's creation
    finished_us: int | None = None
    preemptions: int = 0


class StoredRun(msgspec.Struct, frozen=True):
    id: int
    workflow: str
    symbol: str
    tick: Tick
    completed: tuple[StoredStep, ...]
    created_at: float | None = None  # wall-clock seconds


class RecoveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """What recovery found and did; logged at start and kept for the status output."""

    symbols: int = 0
    symbols_waiting: int = 0
    runs_resumed: int = 0
    runs_restarted: int = 0
    runs_dropped: int = 0
    steps_reused: int = 0
    positions: int = 0
    fills: int = 0
    next_run_id: int = 1
    journal_seq: int = 0


class LoadedState(msgspec.Struct, frozen=True):
    books: BrokerBooks | None  # None: nothing was ever traded (no account row)
    next_run_id: int
    next_seq: int
    runs: tuple[StoredRun, ...]
    fills: int
    positions: int


def _instant(value: object) -> float | None:
    """A stored wall-clock time, or None where the column holds anything else (REAL affinity
    keeps text as text, and infinities are storable): the run is then taken as created now,
    rather than the daemon refusing to start over one odd row."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


async def load_state(
    conn: aiosqlite.Connection,
    path: str,
    symbols: SymbolTable,
    order_memory: int = 100_000,
) -> LoadedState:
    """Restore ``symbols`` and read the rest; ``order_memory`` bounds the fills read back
    (the newest, which keep retried orders idempotent)."""
    try:
        return await _load(conn, symbols, order_memory)
    except (sqlite3.Error, StorageError) as exc:
        raise StorageError(f"{path}: cannot read state: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise StorageError(f"{path}: the stored account, positions or fills are invalid: {exc}") \
            from exc


async def _load(
    conn: aiosqlite.Connection,
    symbols: SymbolTable,
    order_memory: int,
) -> LoadedState:
    prices: dict[str, float] = {}
    async with conn.execute(
        "SELECT id, name, phase, status, priority, last_processed, last_error, last_tick "
        "FROM symbols ORDER BY id"
    ) as cur:
        async for row in cur:
            tick = _decode_tick(row[7]) if row[7] is not None else None
            if tick is not None:
                prices[row[1]] = tick.price
            symbols.restore(
                SymbolRow(
                    id=row[0], name=row[1], phase=row[2], status=row[3], priority=row[4],
                    last_processed=row[5], last_error=row[6],
                    last_price=tick.price if tick else None, last_ts=tick.ts if tick else None,
                ),
                tick,
            )

    books: BrokerBooks | None = None
    async with conn.execute(
        "SELECT cash, fees_paid, orders, fill_count, duplicates FROM account WHERE id = 1"
    ) as cur:
        account = await cur.fetchone()
    positions: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    if account is not None:
        async with conn.execute(
            "SELECT symbol, qty, avg_cost, realized_pnl FROM positions ORDER BY symbol"
        ) as cur:
            positions = [
                {"symbol": r[0], "qty": r[1], "avg_cost": r[2], "realized_pnl": r[3]}
                async for r in cur
            ]
        # The newest fills keep their client order ids idempotent after the restart.
        async with conn.execute(
            "SELECT client_order_id, symbol, side, qty, price, last_price, notional, fee, "
            "realized_pnl, ts FROM fills ORDER BY ts DESC, rowid DESC LIMIT ?",
            (order_memory,),
        ) as cur:
            names = ("client_order_id", "symbol", "side", "qty", "price", "last_price",
                     "notional", "fee", "realized_pnl", "ts")
            fills = [dict(zip(names, r, strict=True)) async for r in cur]
        fills.reverse()
        books = msgspec.convert(
            {
                "cash": account[0],
                "fees_paid": account[1],
                "orders": account[2],
                "fill_count": account[3],
                "duplicates": account[4],
                "positions": positions,
                "last_prices": prices,
                "fills": fills,
            },
            BrokerBooks,
        )

    # Ids continue after the highest ever used, even if retention pruned its rows: the
    # high-water marks in meta, the runs still stored, and the orders (never pruned).
    async with conn.execute(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM run_rows), 0), "
        "COALESCE((SELECT MAX(last_id) FROM run_blocks), 0), "
        "COALESCE((SELECT MAX(run_id) FROM orders), 0), "
        "COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'max_run_id'), 0)), "
        "MAX(COALESCE((SELECT MAX(last_seq) FROM journal_blocks), 0), "
        "COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'max_seq'), 0))"
    ) as cur:
        marks = await cur.fetchone()
    next_run_id = (marks[0] if marks else 0) + 1
    next_seq = (marks[1] if marks else 0) + 1

    stored: list[StoredRun] = []
    async with conn.execute(
        "SELECT id, workflow, symbol, tick, steps, created_at FROM run_rows "
        "WHERE state IN ('pending', 'running') ORDER BY id"
    ) as cur:
        async for r in cur:
            try:
                steps = _decode_steps(r[4]) if r[4] is not None else []
            except msgspec.DecodeError as exc:
                # Not a record this tickflow wrote: starting would lose or redo the run's
                # work silently, so the file is left for the operator to look at.
                raise StorageError(
                    f"run {r[0]} in run_rows: its steps are not step records "
                    f"(engine/core/layout.py, StepRecord): {exc}"
                ) from exc
            completed = tuple(
                StoredStep(s.name, s.output, s.attempts, bool(s.output_stored), s.started_us,
                           s.finished_us, s.preemptions)
                for s in steps if s.state == "completed"
            )
            stored.append(
                StoredRun(r[0], r[1], r[2], _decode_tick(r[3]), completed, _instant(r[5]))
            )
    runs = tuple(stored)
    return LoadedState(books, next_run_id, next_seq, runs, len(fills), len(positions))
