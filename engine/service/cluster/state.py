"""A partition's state: what moves with a partition from one node to the next.

A partition's checkpoint is a :class:`PartitionState`, JSON-encoded (:func:`encode_state`,
:func:`decode_state`); :mod:`engine.service.cluster.handover` takes it from a running engine
(``snapshot``), applies it to another (``restore``) and takes the partition out of the engine
that gave it up (``evict``). For the symbols ``partition_of(name, partitions)`` maps to the
partition, it holds:

* ``seq``: the last stream sequence applied. The new owner consumes from ``seq + 1``;
* the **symbol rows**: priority, phase, status, last tick, last processed and last error --
  everything the symbol table keeps per symbol but its local id (each node numbers its own);
* the **books**, per symbol: its position, last price, its *cash flow* and fees and number of
  executions since ever (kept exact by a ledger although the broker forgets old fills), so
  that the books of N nodes started from the same initial cash add up to one account
  (``cash = initial + sum of every symbol's cash flow``); and its fills with their client
  order ids -- those of the partition's runs in flight always, and its newest others (100 per
  partition by default) -- so that an order re-sent under the same id on the new owner gets
  its original fill back instead of trading again;
* the **runs in flight** (id, workflow, symbol, tick, creation time, and the completed steps
  with their outputs, as storage keeps them): the new owner adopts them under the same ids, so
  completed steps are not run again and order steps keep their client order ids. A step output
  JSON cannot encode is not carried: that run starts over (same id), as after a restart.

Guarantees, given the data plane's rule that a stream message is acked only once a checkpoint
covering it is stored: a checkpoint is a consistent cut at ``seq`` (taken synchronously on the
event loop, between two events); restoring it and replaying from ``seq + 1`` applies every
acked event once; a run in flight resumes after its last completed step; positions, cash and
fees move whole, never counted on two nodes (the old owner's eviction takes out exactly what
the checkpoint carries in, a running order step finished first). Not carried: the market
window beyond each symbol's last tick, the risk manager's order-rate window, and statistics
(the broker's duplicates and the engine's counters stay with the node that counted them). An
order the old owner sent after its last checkpoint is the cluster order registry's to answer.

``format`` versions the encoding: a later release reads older formats it lists, and refuses the
rest. A checkpoint of a format this release does not read is a clear
:class:`~engine.service.cluster.errors.CheckpointError`, never a guess; so is anything damaged
or foreign in it (:func:`check_state`), and ``restore`` applies nothing of a checkpoint it
refuses.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Final

import msgspec

from engine.core.events import Tick
from engine.core.symbols import Phase, SymbolStatus

from .books import SymbolBooks
from .errors import CheckpointError
from .partition import partition_of

__all__ = [
    "FORMAT",
    "EvictReport",
    "PartitionState",
    "RestoreReport",
    "RunEntry",
    "StepEntry",
    "SymbolEntry",
    "check_state",
    "decode_state",
    "encode_state",
]

FORMAT: Final = 1
"""The format this release writes; it reads :data:`_READS`."""
_READS: Final = frozenset({1})
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
    # A newer tick waiting to run when this run ends, and the stream sequence of the event
    # that brought it: the follow-up run's id derives from it (Coordinator.id_for), so the
    # new owner starts it under the id the old owner would have used.
    follow_up: Tick | None = None
    follow_up_seq: int | None = None


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
    check_state(state)
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


def check_state(state: PartitionState) -> None:
    """Raise :class:`CheckpointError` for what the types alone do not say: every symbol
    belongs to the partition, names and ids are unique, numbers are finite, phases and
    statuses exist."""
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
