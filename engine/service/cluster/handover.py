"""Moving partitions in and out of a running engine: snapshot, restore, evict.

:func:`snapshot_many` reads the state of some partitions (a :class:`PartitionState` each, see
:mod:`engine.service.cluster.state`) from a running engine; :func:`restore_many` applies
states to an engine that holds nothing of their partitions (symbols registered or updated,
books merged into its broker, runs adopted by its coordinator so completed steps are not run
again); :func:`evict_many` takes partitions out of an engine that gave them up or lost them
(their runs cancelled -- an order step running is let finish, never cut --, then their
symbols' rows, ticks and books removed: the next owner restores them from the checkpoint).
Nothing here touches the other partitions' symbols, runs or books. :func:`snapshot`,
:func:`restore` and :func:`evict` do the same for one partition.

Each call is synchronous on the event loop (the eviction awaits only its runs' ends), so a
snapshot is a consistent cut between two events. The broker is read and written through its
:class:`~engine.core.orders.Broker` protocol (``snapshot``/``restore``, one each per call
whatever the number of partitions: call the ``_many`` forms when several partitions move at
once); the per-symbol cash and fees come from a :class:`~engine.service.cluster.books.BookLedger`
kept per engine from the first call on (:func:`track` starts it as the node's engine starts).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec

from engine.core.fsm import StepState
from engine.core.orders import Fill
from engine.core.records import clean_text
from engine.core.symbols import SymbolRow, SymbolStatus

from .books import BookLedger, merged, shares_of, without
from .errors import CheckpointError
from .partition import partition_of
from .state import (
    EvictReport,
    PartitionState,
    RestoreReport,
    RunEntry,
    StepEntry,
    SymbolEntry,
    check_state,
)

if TYPE_CHECKING:
    from engine.core.coordinator import Coordinator
    from engine.core.pipeline import Pipeline
    from engine.core.runs import Run

__all__ = [
    "EVICTED",
    "RECENT_FILLS",
    "evict",
    "evict_many",
    "restore",
    "restore_many",
    "snapshot",
    "snapshot_many",
    "track",
]

EVICTED: Final = "partition moved to another node"
RECENT_FILLS: Final = 100
"""A partition's newest fills a checkpoint carries (besides those of its runs in flight): what
a new owner may meet again is a run in flight's order, re-sent under its client order id; the
rest of a replay's orders are the cluster's order registry's to answer."""
_UNENCODABLE = (TypeError, OverflowError, msgspec.EncodeError, UnicodeError, RecursionError)
_encode = msgspec.json.Encoder().encode


class _Parts(dict[str, int]):
    """Symbol -> partition for one partition count, computed once per symbol."""

    __slots__ = ("partitions",)

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self.partitions = partitions

    def __missing__(self, symbol: str) -> int:
        part = self[symbol] = partition_of(symbol, self.partitions)
        return part


_PARTS: dict[int, _Parts] = {}


def _parts(partitions: int, wanted: Iterable[int]) -> _Parts:
    for p in wanted:
        if not (partitions >= 1 and 0 <= p < partitions):
            raise ValueError(f"partition {p} is not in 0..{partitions - 1}")
    parts = _PARTS.get(partitions)
    if parts is None:
        parts = _PARTS[partitions] = _Parts(partitions)
    return parts


class _Tracker:
    """Per engine: its books' ledger, and who waits for which runs to end."""

    def __init__(self, engine: Pipeline) -> None:
        self.ledger = BookLedger(engine.broker.snapshot())
        self._waits: list[tuple[set[int], asyncio.Event]] = []
        self._previous: Any = None

    def hook(self, coordinator: Coordinator) -> None:
        # Asked of the coordinator rather than remembered: a tracker holding the coordinator
        # would hold the engine (its observers are the engine's methods), the key of the weak
        # map it lives in, forever. A new session builds a new coordinator: hooked then.
        if coordinator.on_run_finished != self._run_finished:
            self._previous = coordinator.on_run_finished
            coordinator.on_run_finished = self._run_finished

    def _run_finished(self, run: Run) -> None:
        if self._previous is not None:
            self._previous(run)
        for ids, done in self._waits:
            ids.discard(run.id)
            if not ids:
                done.set()

    async def wait_ended(self, ids: set[int], bound_s: float) -> None:
        done = asyncio.Event()
        entry = (ids, done)
        self._waits.append(entry)
        try:
            async with asyncio.timeout(bound_s):
                await done.wait()
        finally:
            self._waits.remove(entry)


_TRACKERS: weakref.WeakKeyDictionary[Pipeline, _Tracker] = weakref.WeakKeyDictionary()


def _tracker(engine: Pipeline) -> tuple[_Tracker, Coordinator]:
    coordinator = engine.coordinator
    if coordinator is None:
        raise RuntimeError("the engine is not running: use `async with engine.session()`")
    tracker = _TRACKERS.get(engine)
    if tracker is None:
        tracker = _TRACKERS[engine] = _Tracker(engine)
    tracker.hook(coordinator)
    return tracker, coordinator


def track(engine: Pipeline) -> None:
    """Start keeping ``engine``'s per-symbol cash and fees, before its broker forgets any fill
    (a cluster node calls it as its engine starts; every function here calls it too)."""
    _tracker(engine)


# -- snapshot -----------------------------------------------------------------------------------


def snapshot(
    engine: Pipeline, partition: int, partitions: int, seq: int, *,
    recent_fills: int = RECENT_FILLS,
) -> PartitionState:
    """``partition``'s state in ``engine`` now, after applying stream sequence ``seq``."""
    return snapshot_many(engine, {partition: seq}, partitions, recent_fills=recent_fills)[partition]


def snapshot_many(
    engine: Pipeline, seqs: Mapping[int, int], partitions: int, *,
    recent_fills: int = RECENT_FILLS,
) -> dict[int, PartitionState]:
    """The state of each partition in ``seqs`` (partition -> last stream sequence applied)."""
    part_of = _parts(partitions, seqs).__getitem__
    if recent_fills < 0 or any(seq < 0 for seq in seqs.values()):
        raise ValueError(f"recent_fills ({recent_fills}) and seqs must be >= 0: {dict(seqs)}")
    tracker, coordinator = _tracker(engine)
    broker = engine.broker
    books = broker.snapshot()
    tracker.ledger.catch_up(books)
    clock = engine.clock
    offset = clock.wall() - clock.now()
    symbols: dict[int, list[SymbolEntry]] = {p: [] for p in seqs}
    for s in engine.symbols:
        group = symbols.get(part_of(s.name))
        if group is not None:
            group.append(SymbolEntry(
                name=s.name, priority=s.priority, phase=s.phase.value, status=s.status.value,
                last_processed=s.last_processed, last_error=clean_text(s.last_error),
                last_tick=s.last_tick,
            ))
    runs: dict[int, list[RunEntry]] = {p: [] for p in seqs}
    pinned: list[Fill] = []
    for run in coordinator.runs.values():
        bucket = runs.get(part_of(run.symbol.name))
        if bucket is None or run.cancel_reason is not None:
            continue
        bucket.append(_run_entry(run, offset))
        for step in run.steps:
            if step.spec.sends_orders:
                # StepContext.client_order_id: the id this step's order goes out under.
                fill = broker.fill_for(f"{run.workflow.name}:{run.id}:{step.spec.name}")
                if fill is not None:
                    pinned.append(fill)
    books_of = shares_of(
        books, part_of, seqs.keys(), tracker.ledger.flows, recent=recent_fills, pinned=pinned
    )
    taken_at = clock.wall()
    return {
        p: PartitionState(
            partition=p, partitions=partitions, seq=seq, taken_at=taken_at,
            symbols=tuple(sorted(symbols[p], key=_entry_name)),
            books=books_of[p],
            runs=tuple(sorted(runs[p], key=_entry_id)),
        )
        for p, seq in seqs.items()
    }


def _run_entry(run: Run, offset: float) -> RunEntry:
    trigger_at = run.trigger_at
    completed = []
    for step in run.steps:
        if step.state is not StepState.COMPLETED:
            continue
        output, stored = step.output, True
        try:
            _encode(output)
        except _UNENCODABLE:
            output, stored = None, False
        completed.append(StepEntry(
            name=step.spec.name, output=output, attempts=step.attempts,
            preemptions=step.preemptions, started_us=_us(step.started_at, trigger_at),
            finished_us=_us(step.finished_at, trigger_at), stored=stored,
        ))
    return RunEntry(
        id=run.id, workflow=run.workflow.name, symbol=run.symbol.name, tick=run.tick,
        created_at=trigger_at + offset, completed=tuple(completed),
        follow_up=run.follow_up, follow_up_seq=getattr(run, "follow_up_seq", None),
    )


def _us(at: float | None, origin: float) -> int | None:
    return None if at is None else int((at - origin) * 1e6)


# -- restore ------------------------------------------------------------------------------------


def restore(engine: Pipeline, state: PartitionState) -> RestoreReport:
    """Apply ``state`` to ``engine`` (see :func:`restore_many`)."""
    return restore_many(engine, [state])


def restore_many(engine: Pipeline, states: Iterable[PartitionState]) -> RestoreReport:
    """Apply ``states`` to ``engine``, which must hold nothing of their partitions (evict
    them first): :class:`CheckpointError` otherwise, and then nothing of any is applied."""
    states = tuple(states)
    if not states:
        return RestoreReport(symbols=0, positions=0, fills=0, resumed=0, restarted=0, dropped=0)
    tracker, coordinator = _tracker(engine)
    for state in states:
        check_state(state)  # a state built in memory rather than decoded gets the same checks
    counts = {s.partitions for s in states}
    if len(counts) > 1:
        raise CheckpointError(f"checkpoints of different partition counts {sorted(counts)}")
    numbers = [s.partition for s in states]
    where = f"cannot restore partition(s) {', '.join(map(str, sorted(numbers)))}"
    if len(set(numbers)) < len(numbers):
        raise CheckpointError(f"{where}: a partition is given twice")
    part_of = _parts(states[0].partitions, numbers).__getitem__
    wanted = set(numbers)
    busy = sorted({
        r.symbol.name for r in coordinator.runs.values() if part_of(r.symbol.name) in wanted
    })
    if busy:
        raise CheckpointError(f"{where}: runs of {', '.join(busy[:5])} are in flight here "
                              "(evict the partition first)")
    ids = [r.id for s in states for r in s.runs]
    clash = sorted({str(i) for i in ids if i in coordinator.runs})
    if clash or len(set(ids)) < len(ids):
        raise CheckpointError(f"{where}: run id(s) {', '.join(clash[:5])} are in flight here "
                              "for other symbols: run ids must be unique across the cluster")
    books = engine.broker.snapshot()
    ledger = tracker.ledger
    ledger.catch_up(books)
    if any(part_of(s) in wanted for s in ledger.flows):
        raise CheckpointError(f"{where}: this node's books hold its symbols (evict it first)")
    shares = [b for s in states for b in s.books]
    combined = merged(books, shares)  # CheckpointError: nothing changed yet
    engine.broker.restore(combined)
    ledger.absorb(shares, combined)

    symbols, market = engine.symbols, engine.market
    entries = [e for s in states for e in s.symbols]
    for entry in entries:
        local = symbols.register(entry.name, entry.priority)  # this node's id for it
        symbols.restore(
            SymbolRow(
                id=local.id, name=entry.name, phase=entry.phase, status=entry.status,
                priority=entry.priority, last_processed=entry.last_processed,
                last_error=entry.last_error, last_price=None, last_ts=None,
            ),
            entry.last_tick,
        )
        if entry.last_tick is not None:
            market.record(entry.last_tick)  # the price an order of a resumed run goes out at

    clock = engine.clock
    offset = clock.wall() - clock.now()
    outcomes = {"resumed": 0, "restarted": 0, "dropped": 0}
    for run in (r for s in states for r in s.runs):
        completed = {
            s.name: (s.output, s.attempts, s.preemptions, s.started_us, s.finished_us)
            for s in run.completed
        }
        if not all(s.stored for s in run.completed):
            completed = {}  # an output could not be carried: run it again from the start
        outcome = coordinator.adopt(
            run.id, run.workflow, run.symbol, run.tick, completed, run.created_at - offset
        )
        outcomes[outcome] += 1
        adopted = coordinator.runs.get(run.id)
        if adopted is not None:
            # As the old owner had it, not as adopt guesses it from the symbol's last tick
            # (a workflow that skips while busy has none; the follow-up's id needs its seq).
            adopted.follow_up = run.follow_up
            adopted.follow_up_at = clock.now() if run.follow_up is not None else 0.0
            if hasattr(adopted, "follow_up_seq"):  # the seam of Coordinator.id_for
                adopted.follow_up_seq = run.follow_up_seq
    for entry in entries:
        live = symbols.get(entry.name)
        if live is not None and live.status is SymbolStatus.PROCESSING and not live.runs:
            symbols.mark_pending(live)  # its run did not come along: the sweep re-triggers it
    return RestoreReport(
        symbols=len(entries),
        positions=sum(1 for b in shares if b.position is not None),
        fills=sum(len(b.fills) for b in shares),
        **outcomes,
    )


# -- evict --------------------------------------------------------------------------------------


async def evict(
    engine: Pipeline, partition: int, partitions: int, *, grace_s: float = 5.0
) -> EvictReport:
    """Take ``partition`` out of ``engine`` (see :func:`evict_many`)."""
    return await evict_many(engine, [partition], partitions, grace_s=grace_s)


async def evict_many(
    engine: Pipeline, gone: Collection[int], partitions: int, *, grace_s: float = 5.0
) -> EvictReport:
    """Take the partitions ``gone`` out of ``engine``: cancel their runs and wait until they
    ended (an order step running is never cut: it finishes, up to its timeout plus
    ``grace_s``), then remove their symbols' rows, ticks and books. :class:`CheckpointError`
    if runs are still in flight after that bound (nothing is removed then; evict again)."""
    parts = _parts(partitions, gone)
    wanted = set(gone)

    def leaving(symbol: str) -> bool:
        return parts[symbol] in wanted

    tracker, coordinator = _tracker(engine)
    cancelled = 0
    for _ in range(3):  # a run ending may start a follow-up already waiting: cancel that too
        runs = [r for r in coordinator.runs.values() if leaving(r.symbol.name)]
        if not runs:
            break
        bound = grace_s + max(
            (s.spec.timeout_s for r in runs for s in r.steps if s.state is StepState.RUNNING),
            default=0.0,
        )
        for run in runs:
            cancelled += coordinator.cancel_run(run.id, EVICTED)
        live = {r.id for r in runs if r.id in coordinator.runs}
        if live:
            try:
                await tracker.wait_ended(live, bound)
            except TimeoutError:
                raise CheckpointError(
                    f"cannot evict partition(s) {sorted(wanted)}: run(s) {sorted(live)[:5]} "
                    f"still in flight {bound:g}s after their cancel"
                ) from None
    else:
        if any(leaving(r.symbol.name) for r in coordinator.runs.values()):
            raise CheckpointError(f"cannot evict partition(s) {sorted(wanted)}: their runs "
                                  "keep starting")

    books = engine.broker.snapshot()
    ledger = tracker.ledger
    ledger.catch_up(books)
    shares = [
        b for group in shares_of(books, parts.__getitem__, wanted, ledger.flows, recent=0)
        .values() for b in group
    ]
    remaining = without(books, leaving, shares)
    engine.broker.restore(remaining)
    ledger.drop((s.symbol for s in shares), remaining)
    names = [s.name for s in engine.symbols if leaving(s.name)]
    for name in names:
        engine.symbols.discard(name)
    for name in engine.market.symbols():
        if leaving(name):
            engine.market.discard(name)
    return EvictReport(
        symbols=len(names),
        positions=len(books.positions) - len(remaining.positions),
        fills=len(books.fills) - len(remaining.fills),
        cancelled=cancelled,
    )


def _entry_name(entry: SymbolEntry) -> str:
    return entry.name


def _entry_id(entry: RunEntry) -> int:
    return entry.id
