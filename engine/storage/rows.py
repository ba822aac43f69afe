"""The rows of one commit: built from live objects, sent as one statement.

Split from :mod:`engine.storage.writer`, which decides *when* to commit; this module decides
*what* a commit writes and how the rows travel. The records themselves are built by
:mod:`engine.core.records` (compiled).

How rows travel, and why (measured; docs/storage.md, "Cost"): whatever the SQLite thread does
while holding the GIL is taken from the event loop, and so is every hand-over of the GIL
between the two. So a commit is ONE statement, ``INSERT INTO commits``, whose trigger
(schema v5) writes everything, as SQLite's own transaction:

* completed runs (nearly all runs) as ONE JSON array per commit, stored as it is
  (`run_blocks`): nothing to bind or expand per run. Their records are made as they end
  (:class:`engine.core.records.FinishedRuns`), so finished runs are freed at once;
* accepted events likewise (`journal_blocks`);
* changed symbols as one JSON object, keyed "id:name", expanded by ``json_each`` inside an
  upsert, each symbol's record stored as the JSON text it comes out as (`symbol_rows`): parsing
  it again column by column cost the SQLite thread ~7 us a symbol (SQLite 3.40 has no parse
  cache);
* the few runs that need a row of their own (in flight with progress, failed, cancelled) as
  one JSON array of rows, expanded likewise.

Orders, fills and positions -- a few per commit at most -- follow as statements of their own,
in the same explicit transaction (:attr:`Rows.single` is then false).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import aiosqlite
import msgspec

from engine.core.layout import RunRowRecord, position
from engine.core.records import FinishedRuns, run_rows, steps_json, symbol_batch
from engine.core.runs import Run
from engine.core.symbols import SymbolState

if TYPE_CHECKING:
    from engine.core.orders import Broker

__all__ = ["COMMIT_SQL", "Journal", "Rows"]

_encode = msgspec.json.Encoder().encode


class Journal(NamedTuple):
    """The journal records of one commit (:meth:`engine.core.records.JournalLog.take`)."""

    records: int
    first_seq: int
    last_seq: int
    first_at: float
    last_at: float
    events: str  # the records, as one JSON array


# The columns of the view `commits` (engine/storage/schema.py, v5), in order.
COMMIT_SQL = "INSERT INTO commits VALUES (" + ",".join("?" * 16) + ")"


class Rows:
    """Rows of one commit, built from live objects at one instant.

    ``offset`` turns the engine's monotonic instants (when a run was triggered, when a step
    started and ended) into wall-clock time, which is what people and retention read.
    """

    __slots__ = (
        "accounts",
        "commit",
        "fills",
        "finished",
        "now",
        "offset",
        "orders",
        "positions",
        "routes",
        "runs",
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
        self.commit: tuple[Any, ...] = ()  # the parameters of COMMIT_SQL (encode)

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

    def account(self, broker: Broker, symbols: set[str]) -> None:
        for name in symbols:
            p = broker.position(name)
            self.positions.append((p.symbol, p.qty, p.avg_cost, p.realized_pnl))
        snap = broker.statistics()
        self.accounts.append(
            (1, snap.cash, snap.fees_paid, snap.orders, snap.fills, snap.duplicates, self.now)
        )

    def encode(self, journal: Journal, max_run_id: int | None = None) -> None:
        """Encode the rows now, on the loop, before the transaction opens: what is written is
        the objects' state at this instant (a later change to an output does not leak in),
        and an encoding error cannot leave a transaction open. ``max_run_id``: the highest run
        id handed out (kept in `meta` with the highest journal seq; ids are never reused)."""
        events: tuple[Any, ...] = (None,) * 5
        if journal.records:
            events = (journal.first_seq, journal.last_seq, journal.first_at, journal.last_at,
                      journal.events)
        block: tuple[Any, ...] = (None,) * 6
        finished = self.finished
        if finished is not None and finished.count:
            block = (finished.first_id, finished.last_id, finished.finished_at, finished.count,
                     finished.block(),
                     _encode(finished.unrow).decode() if finished.unrow else None)
        self.commit = (
            *events, self.symbols or None, self.now, *block,
            _runs_json(self.runs) if self.runs else None,
            max_run_id or None, journal.last_seq if journal.records else None,
        )

    @property
    def single(self) -> bool:
        """Whether the commit is the one statement (:data:`COMMIT_SQL`) and nothing else."""
        return not (self.orders or self.fills or self.positions or self.accounts)

    async def write(self, conn: aiosqlite.Connection) -> None:
        """The whole commit: the one statement, then orders, fills and positions if any (in
        a transaction the caller opened: :attr:`single` is then false)."""
        await conn.execute(COMMIT_SQL, self.commit)
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


_TICK = position(RunRowRecord, "tick")
_STEPS = position(RunRowRecord, "steps")


def _runs_json(rows: list[tuple[Any, ...]]) -> str:
    """The rows of `run_rows` (:func:`engine.core.records.run_record`, a
    :class:`~engine.core.layout.RunRowRecord` each) as one JSON array, the encoded tick and
    steps of each embedded as they are."""
    raw = msgspec.Raw
    out = []
    for row in rows:
        fields = list(row)
        fields[_TICK] = raw(row[_TICK])
        fields[_STEPS] = raw(steps_json(row[_STEPS]))
        out.append(fields)
    return _encode(out).decode()
