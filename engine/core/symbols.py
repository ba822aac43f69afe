"""Per-symbol state: the symbol table and the window of recent ticks.

Compiled in place like :mod:`engine.core.runs` (typed by ``symbols.pxd``). Every accepted tick
and every run's start and end touch them.

The symbol state table has one row per symbol (phase, status, priority, latest tick). The
engine reads and changes rows only through :class:`SymbolTable`, so the storage layer can back
it with SQLite without the engine noticing; ``listener`` hears every change.

:class:`MarketData` keeps the recent ticks per symbol, the window strategies compute their
signals from. The engine records every accepted tick there before it triggers workflows, so a
step always sees at least the tick that triggered its run. Memory is bounded: ``depth`` ticks
per symbol.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec

from engine.core.events import Tick

__all__ = ["MarketData", "Phase", "SymbolRow", "SymbolState", "SymbolStatus", "SymbolTable"]


class Phase(enum.Enum):
    __hash__ = object.__hash__  # singletons: identity hash at C speed

    IDLE = "idle"
    DATA_READY = "data_ready"


class SymbolStatus(enum.Enum):
    __hash__ = object.__hash__

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


_IDLE = Phase.IDLE
_DATA_READY = Phase.DATA_READY
_PENDING = SymbolStatus.PENDING
_PROCESSING = SymbolStatus.PROCESSING
_COMPLETED = SymbolStatus.COMPLETED
_FAILED = SymbolStatus.FAILED


class SymbolState:
    """A live row. ``active_runs`` counts runs (pending, running or waiting as follow-up)."""

    __slots__ = (
        "id",
        "key",
        "last_error",
        "last_processed",
        "last_tick",
        "logged",
        "name",
        "phase",
        "priority",
        "runs",
        "status",
    )

    def __init__(self, id: int, name: str, priority: int) -> None:
        self.id = id
        self.name = name
        self.priority = priority
        self.phase = Phase.IDLE
        self.status = SymbolStatus.COMPLETED
        self.last_tick: Tick | None = None
        self.last_processed: float | None = None
        self.last_error: str | None = None
        self.runs: set[Any] = set()  # its live runs (pending, running, or with a follow-up)
        self.logged = False  # in its table's change log (SymbolTable.take_changed)
        self.key = f"{id}:{name}"  # its key in storage's batches (engine.core.records.symbol_batch)

    @property
    def active_runs(self) -> int:
        return len(self.runs)

    def row(self) -> SymbolRow:
        return SymbolRow(
            id=self.id,
            name=self.name,
            phase=self.phase.value,
            status=self.status.value,
            priority=self.priority,
            last_processed=self.last_processed,
            last_error=self.last_error,
            last_price=self.last_tick.price if self.last_tick else None,
            last_ts=self.last_tick.ts if self.last_tick else None,
        )


class SymbolRow(msgspec.Struct, frozen=True, kw_only=True):
    """A frozen copy of a row, for status output and storage."""

    id: int
    name: str
    phase: str
    status: str
    priority: int
    last_processed: float | None
    last_error: str | None
    last_price: float | None
    last_ts: float | None


class SymbolTable:
    """In-memory symbol table; every mutation goes through a method.

    Once :meth:`track` is on, the table keeps a change log for storage: each symbol changed
    since the last :meth:`take_changed` appears in it once, however often it changed (a symbol
    ticking a thousand times between two commits is written once). Logging a change costs a
    flag test here, not a call into the storage writer: a symbol changes three or four times
    per run.
    """

    __slots__ = ("_by_name", "_log", "_next_id", "_wake")

    def __init__(self) -> None:
        self._by_name: dict[str, SymbolState] = {}
        self._next_id = 1
        self._log: list[SymbolState] | None = None
        self._wake: Callable[[], None] | None = None

    def track(self, wake: Callable[[], None] | None) -> None:
        """Keep the change log from now on; ``wake()`` is called when it stops being empty."""
        if self._log is None:
            self._log = []
        self._wake = wake

    def take_changed(self) -> list[SymbolState]:
        """The symbols changed since the last call (each once); the log starts over."""
        log = self._log
        if not log:
            return []
        self._log = []
        for state in log:
            state.logged = False
        return log

    @property
    def changed(self) -> int:
        """How many symbols the change log holds."""
        return 0 if self._log is None else len(self._log)

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[SymbolState]:
        return iter(list(self._by_name.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> SymbolState | None:
        return self._by_name.get(name)

    def register(self, name: str, priority: int) -> SymbolState:
        state = self._by_name.get(name)
        if state is None:
            state = self._by_name[name] = SymbolState(self._next_id, name, priority)
            self._next_id += 1
            self._changed(state)
        return state

    def restore(self, row: SymbolRow, tick: Tick | None) -> SymbolState:
        """Re-create a row exactly as stored (used by recovery)."""
        state = SymbolState(row.id, row.name, row.priority)
        state.phase = Phase(row.phase)
        state.status = SymbolStatus(row.status)
        state.last_processed = row.last_processed
        state.last_error = row.last_error
        state.last_tick = tick
        self._by_name[row.name] = state
        self._next_id = max(self._next_id, row.id + 1)
        return state

    def discard(self, name: str) -> SymbolState | None:
        """Remove ``name``'s row (its partition moved to another node, which restores it from
        a checkpoint); returns the row removed. A row with live runs is refused: the runs hold
        it, and would update a row the table no longer has."""
        state = self._by_name.get(name)
        if state is None:
            return None
        if state.runs:
            raise ValueError(f"symbol {name!r} has {len(state.runs)} live run(s): end them first")
        del self._by_name[name]
        if state.logged and self._log is not None:
            self._log.remove(state)  # storage must not write a row the table no longer has
            state.logged = False
        return state

    def mark_data_ready(self, state: SymbolState, tick: Tick) -> None:
        state.last_tick = tick
        state.phase = _DATA_READY
        state.status = _PENDING
        self._changed(state)

    def set_priority(self, state: SymbolState, priority: int) -> None:
        state.priority = priority
        self._changed(state)

    def mark_processing(self, state: SymbolState) -> None:
        if state.status is not _PROCESSING:
            state.status = _PROCESSING
            self._changed(state)

    def mark_completed(self, state: SymbolState, when: float) -> None:
        state.phase = _IDLE
        state.status = _COMPLETED
        state.last_processed = when
        state.last_error = None
        self._changed(state)

    def mark_failed(self, state: SymbolState, error: str, when: float) -> None:
        state.phase = _IDLE
        state.status = _FAILED
        state.last_processed = when
        state.last_error = error
        self._changed(state)

    def mark_pending(self, state: SymbolState) -> None:
        """Work for the symbol was dropped (shed, cancelled): leave it for the sweep."""
        state.phase = _DATA_READY
        state.status = _PENDING
        self._changed(state)

    def waiting(self) -> list[SymbolState]:
        """Symbols left ``data_ready`` + ``pending`` with no run: the state-driven half."""
        return [
            s
            for s in self._by_name.values()
            if s.phase is Phase.DATA_READY
            and s.status is SymbolStatus.PENDING
            and not s.runs
            and s.last_tick is not None
        ]

    def _changed(self, state: SymbolState) -> None:
        log = self._log
        if log is not None and not state.logged:
            state.logged = True
            log.append(state)
            if len(log) == 1 and self._wake is not None:
                self._wake()


class MarketData:
    """A bounded ring of the latest ticks for each symbol."""

    __slots__ = ("_depth", "_ticks")

    def __init__(self, depth: int = 512) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._depth = depth
        self._ticks: dict[str, deque[Tick]] = {}

    @property
    def depth(self) -> int:
        return self._depth

    def record(self, tick: Tick) -> None:
        ring = self._ticks.get(tick.symbol)
        if ring is None:
            ring = self._ticks[tick.symbol] = deque(maxlen=self._depth)
        ring.append(tick)

    def window(self, symbol: str, n: int | None = None) -> Sequence[Tick]:
        """The last ``n`` ticks of ``symbol``, oldest first (all kept ticks if ``n`` is None)."""
        ring = self._ticks.get(symbol)
        if not ring:
            return ()
        if n is None or n >= len(ring):
            return tuple(ring)
        return tuple(ring)[-n:]

    def latest(self, symbol: str) -> Tick | None:
        ring = self._ticks.get(symbol)
        return ring[-1] if ring else None

    def symbols(self) -> list[str]:
        return list(self._ticks)

    def discard(self, symbol: str) -> None:
        """Forget ``symbol``'s ticks (its partition moved to another node: a window kept here
        would go stale, and mix with new ticks should the partition come back)."""
        self._ticks.pop(symbol, None)
