"""A partition's state: what moves with a partition from one node to the next.

A partition's checkpoint is a :class:`PartitionState`, JSON-encoded (:func:`encode_state`,
:func:`decode_state`). It holds, for the symbols ``partition_of(name, partitions)`` maps to it:

* ``seq``: the last stream sequence applied. The new owner consumes from ``seq + 1``;
* the **symbol rows**: priority, phase, status, last tick, last processed and last error --
  everything the symbol table keeps per symbol but its local id (each node numbers its own);
* the **books**: per symbol its position, last price, the fills the broker still remembers
  (their client order ids keep a replayed order idempotent on the new owner: it gets the
  original fill back instead of trading again) and its *cash flow* and fees since ever, so that
  the books of N nodes started from the same initial cash add up to one account;
* the **runs in flight** (id, workflow, symbol, tick, creation time, and the completed steps
  with their outputs, as storage keeps them): the new owner adopts them under the same ids, so
  completed steps are not run again and order steps keep their client order ids. A step output
  JSON cannot encode is not carried: that run starts over (same id), as after a restart.

:func:`snapshot` makes one from a running engine; :func:`restore` applies one to a running
engine that holds nothing of the partition (symbols registered or updated, books merged into
its broker, runs adopted by its coordinator); :func:`evict` takes a partition out of an engine
that gave it up or lost it (its runs cancelled -- an order step running is let finish first --,
then its symbols' rows, ticks and books removed: the next owner restores them from the
checkpoint). Nothing here touches the other partitions' symbols, runs or books.

Guarantees, given the data plane's rule that a stream message is acked only once a checkpoint
covering it is stored: a checkpoint is a consistent cut at ``seq`` (taken between two events,
on the event loop); restoring it and replaying from ``seq + 1`` applies every acked event once;
a replayed order re-derives its client order id and finds its fill in the restored books. Not
carried: the market window beyond each symbol's last tick, the risk manager's order-rate
window, and statistics counters (the broker's duplicates, the engine's counters stay per node).

``format`` versions the encoding. A checkpoint of a format this release does not read is a
clear :class:`~engine.service.cluster.errors.CheckpointError`, never a guess; so is anything
damaged or foreign in it, and :func:`restore` applies nothing of a checkpoint it refuses.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from engine.core.events import Tick
from engine.core.fsm import StepState
from engine.core.records import clean_text
from engine.core.symbols import Phase, SymbolRow, SymbolStatus

from .books import BookLedger, SymbolBooks, merged, share_of, without
from .errors import CheckpointError
from .partition import partition_of

if TYPE_CHECKING:
    from engine.core.coordinator import Coordinator
    from engine.core.pipeline import Pipeline
    from engine.core.runs import Run

__all__ = [
    "EVICTED",
    "FORMAT",
    "EvictReport",
    "PartitionState",
    "RestoreReport",
    "RunEntry",
    "StepEntry",
    "SymbolEntry",
    "decode_state",
    "encode_state",
    "evict",
    "restore",
    "snapshot",
    "track",
]

FORMAT: Final = 1
"""The format this release writes; it reads :data:`_READS`."""
_READS: Final = frozenset({1})
EVICTED: Final = "partition moved to another node"
_UNENCODABLE = (TypeError, OverflowError, msgspec.EncodeError, UnicodeError, RecursionError)
_encode = msgspec.json.Encoder().encode
_PHASES: Final = frozenset(p.value for p in Phase)
_STATUSES: Final = frozenset(s.value for s in SymbolStatus)


class SymbolEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    priority: int
    phase: str
    status: str
    last_processed: float | None  # wall-clock seconds
    last_error: str | None
    last_tick: Tick | None


class StepEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A completed step of a run in flight; times in microseconds after the run's creation."""

    name: str
    output: Any
    attempts: int
    preemptions: int
    started_us: int | None
    finished_us: int | None
    stored: bool = True  # False: the output could not be encoded, the run starts over


class RunEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    workflow: str
    symbol: str
    tick: Tick
    created_at: float  # wall-clock seconds
    completed: tuple[StepEntry, ...]


class PartitionState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: int = FORMAT
    partition: int
    partitions: int
    seq: int  # the last stream sequence applied
    taken_at: float  # wall-clock seconds
    symbols: tuple[SymbolEntry, ...]
    books: tuple[SymbolBooks, ...]
    runs: tuple[RunEntry, ...]


class RestoreReport(msgspec.Struct, frozen=True, kw_only=True):
    symbols: int
    positions: int
    fills: int
    resumed: int  # runs adopted with their completed steps
    restarted: int  # runs adopted from their first step (same id)
    dropped: int  # runs whose workflow is not configured (or disabled) here


class EvictReport(msgspec.Struct, frozen=True, kw_only=True):
    symbols: int
    positions: int
    fills: int
    cancelled: int  # runs in flight cancelled


class _Header(msgspec.Struct):
    format: Any = None


_decode_header = msgspec.json.Decoder(_Header).decode
_decode_state = msgspec.json.Decoder(PartitionState).decode


# -- encoding ---------------------------------------------------------------------------------


def encode_state(state: PartitionState) -> bytes:
    return _encode(state)


def decode_state(data: bytes | str) -> PartitionState:
    """The checkpoint in ``data``; :class:`CheckpointError` saying what is wrong otherwise."""
    try:
        state = _decode_state(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        _check_format(data)  # a format this release does not read says so, first
        raise CheckpointError(f"partition checkpoint is damaged: {exc}") from exc
    if state.format not in _READS:
        _check_format(data)
    _check(state)
    return state


def _check_format(data: bytes | str) -> None:
    try:
        header = _decode_header(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"not a partition checkpoint (a JSON object): {exc}") from exc
    version = header.format
    if type(version) is not int:
        raise CheckpointError(f"not a partition checkpoint: no integer format, got {version!r}")
    if version not in _READS:
        newer = version > FORMAT
        raise CheckpointError(
            f"partition checkpoint format {version} is not one this release reads "
            f"({', '.join(map(str, sorted(_READS)))})"
            + (": it was written by a newer tickflow, upgrade this node" if newer else "")
        )


def _check(state: PartitionState) -> None:
    """What the types alone do not say: every symbol belongs to the partition, names and ids
    are unique, numbers are finite, phases and statuses exist."""
    p, n = state.partition, state.partitions
    where = f"partition checkpoint of partition {p}"
    if not (n >= 1 and 0 <= p < n):
        raise CheckpointError(f"{where}: partition {p} is not in 0..{n - 1}")
    if state.seq < 0:
        raise CheckpointError(f"{where}: seq {state.seq} is negative")
    names = (
        [s.name for s in state.symbols] + [b.symbol for b in state.books]
        + [r.symbol for r in state.runs]
        + [f.symbol for b in state.books for f in b.fills]
        + [b.position.symbol for b in state.books if b.position is not None]
    )
    foreign = sorted({s for s in names if partition_of(s, n) != p})
    if foreign:
        raise CheckpointError(
            f"{where}: {', '.join(foreign[:5])} belong(s) to other partitions of {n}"
        )
    for label, keys in (
        ("symbol", [s.name for s in state.symbols]), ("books of", [b.symbol for b in state.books]),
        ("run", [str(r.id) for r in state.runs]),
    ):
        dup = sorted(k for k, n in Counter(keys).items() if n > 1)
        if dup:
            raise CheckpointError(f"{where}: {label} {', '.join(dup[:5])} more than once")
    for b in state.books:
        if any(f.symbol != b.symbol for f in b.fills) or (
            b.position is not None and b.position.symbol != b.symbol
        ):
            raise CheckpointError(f"{where}: the books of {b.symbol} hold another symbol's")
        numbers = [b.cash_flow, b.fees, *(x for x in (b.last_price,) if x is not None)]
        if b.position is not None:
            numbers += [b.position.qty, b.position.avg_cost, b.position.realized_pnl]
        if not all(math.isfinite(x) for x in numbers) or b.fill_count < 0:
            raise CheckpointError(f"{where}: the books of {b.symbol} are not finite")
    for s in state.symbols:
        if s.phase not in _PHASES or s.status not in _STATUSES:
            raise CheckpointError(f"{where}: symbol {s.name}: phase {s.phase!r} / status "
                                  f"{s.status!r} do not exist")


# -- the engine's side --------------------------------------------------------------------------


class _Tracker:
    """Per engine: its books' ledger, and who waits for which runs to end."""

    def __init__(self, engine: Pipeline) -> None:
        self.ledger = BookLedger(engine.broker.snapshot())
        self.coordinator: Coordinator | None = None
        self._waits: list[tuple[set[int], asyncio.Event]] = []
        self._previous: Any = None

    def hook(self, coordinator: Coordinator) -> None:
        if self.coordinator is not coordinator:  # a new session builds a new coordinator
            self.coordinator = coordinator
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


def _member(partition: int, partitions: int) -> Callable[[str], bool]:
    if not (partitions >= 1 and 0 <= partition < partitions):
        raise ValueError(f"partition {partition} is not in 0..{partitions - 1}")
    cache: dict[str, bool] = {}

    def in_partition(name: str) -> bool:
        hit = cache.get(name)
        if hit is None:
            hit = cache[name] = partition_of(name, partitions) == partition
        return hit

    return in_partition


def snapshot(engine: Pipeline, partition: int, partitions: int, seq: int) -> PartitionState:
    """``partition``'s state in ``engine`` now, after applying stream sequence ``seq``."""
    tracker, coordinator = _tracker(engine)
    in_partition = _member(partition, partitions)
    books = engine.broker.snapshot()
    tracker.ledger.catch_up(books)
    clock = engine.clock
    offset = clock.wall() - clock.now()
    symbols = tuple(
        SymbolEntry(
            name=s.name, priority=s.priority, phase=s.phase.value, status=s.status.value,
            last_processed=s.last_processed, last_error=clean_text(s.last_error),
            last_tick=s.last_tick,
        )
        for s in sorted(engine.symbols, key=_name) if in_partition(s.name)
    )
    runs = tuple(
        _run_entry(run, offset)
        for run in sorted(coordinator.runs.values(), key=_id)
        if in_partition(run.symbol.name) and run.cancel_reason is None
    )
    return PartitionState(
        partition=partition, partitions=partitions, seq=seq, taken_at=clock.wall(),
        symbols=symbols, books=share_of(books, in_partition, tracker.ledger.flows), runs=runs,
    )


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
    )


def _us(at: float | None, origin: float) -> int | None:
    return None if at is None else int((at - origin) * 1e6)


def restore(engine: Pipeline, state: PartitionState) -> RestoreReport:
    """Apply ``state`` to ``engine``, which must hold nothing of its partition (evict it
    first): :class:`CheckpointError` otherwise, and then nothing of ``state`` is applied."""
    tracker, coordinator = _tracker(engine)
    _check(state)  # a state built in memory rather than decoded gets the same checks
    in_partition = _member(state.partition, state.partitions)
    where = f"cannot restore partition {state.partition}"
    busy = sorted({r.symbol.name for r in coordinator.runs.values() if in_partition(r.symbol.name)})
    if busy:
        raise CheckpointError(f"{where}: runs of {', '.join(busy[:5])} are in flight here "
                              "(evict the partition first)")
    clash = sorted(str(r.id) for r in state.runs if r.id in coordinator.runs)
    if clash:
        raise CheckpointError(f"{where}: run id(s) {', '.join(clash[:5])} are in flight here "
                              "for other symbols: run ids must be unique across the cluster")
    books = engine.broker.snapshot()
    ledger = tracker.ledger
    ledger.catch_up(books)
    if any(in_partition(s) for s in ledger.flows):
        raise CheckpointError(f"{where}: this node's books hold its symbols (evict it first)")
    combined = merged(books, state.books)  # CheckpointError: nothing changed yet
    engine.broker.restore(combined)
    ledger.absorb(state.books, combined)

    symbols, market = engine.symbols, engine.market
    for entry in state.symbols:
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
    for run in state.runs:
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
    for entry in state.symbols:
        live = symbols.get(entry.name)
        if live is not None and live.status is SymbolStatus.PROCESSING and not live.runs:
            symbols.mark_pending(live)  # its run did not come along: the sweep re-triggers it
    return RestoreReport(
        symbols=len(state.symbols),
        positions=sum(1 for b in state.books if b.position is not None),
        fills=sum(len(b.fills) for b in state.books),
        **outcomes,
    )


async def evict(
    engine: Pipeline, partition: int, partitions: int, *, grace_s: float = 5.0
) -> EvictReport:
    """Take ``partition`` out of ``engine``: cancel its runs and wait until they ended (an
    order step running is never cut: it finishes, up to its timeout plus ``grace_s``), then
    remove its symbols' rows, ticks and books. :class:`CheckpointError` if runs are still
    in flight after that bound (nothing is removed then; evict again)."""
    tracker, coordinator = _tracker(engine)
    in_partition = _member(partition, partitions)
    cancelled = 0
    for _ in range(3):  # a run ending may start a follow-up already waiting: cancel that too
        runs = [r for r in coordinator.runs.values() if in_partition(r.symbol.name)]
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
                    f"cannot evict partition {partition}: run(s) {sorted(live)[:5]} still in "
                    f"flight {bound:g}s after their cancel"
                ) from None
    else:
        if any(in_partition(r.symbol.name) for r in coordinator.runs.values()):
            raise CheckpointError(f"cannot evict partition {partition}: its runs keep starting")

    books = engine.broker.snapshot()
    ledger = tracker.ledger
    ledger.catch_up(books)
    shares = share_of(books, in_partition, ledger.flows)
    remaining = without(books, in_partition, shares)
    engine.broker.restore(remaining)
    ledger.drop((s.symbol for s in shares), remaining)
    names = [s.name for s in engine.symbols if in_partition(s.name)]
    for name in names:
        engine.symbols.discard(name)
    for name in engine.market.symbols():
        if in_partition(name):
            engine.market.discard(name)
    return EvictReport(
        symbols=len(names),
        positions=sum(1 for s in shares if s.position is not None),
        fills=sum(len(s.fills) for s in shares),
        cancelled=cancelled,
    )


def _name(state: Any) -> str:
    return str(state.name)


def _id(run: Run) -> int:
    return int(run.id)
