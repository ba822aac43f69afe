"""Run ids in cluster mode: derived from where the triggering event sits in the stream.

A single daemon numbers runs with a counter that storage carries across restarts. A cluster
cannot: after a takeover the new owner replays the stream from the checkpoint's ``seq + 1``,
and a run the old owner started (and maybe sent an order from) before dying is started again.
A counter would give it a new id, so a new client order id (``<workflow>:<run id>:<step>``)
and a second fill. Derived from the event instead -- its partition and stream sequence, which
every replay sees unchanged -- the replayed run gets the *same* id, its order the same client
order id, and the order registry (a KV bucket where the first ``create`` of an id wins) refuses
the second fill and reports the first.

Layout (a positive int64, SQLite's INTEGER and the step RNG's seed alike)::

    run_id = seq << 16 | index << 10 | partition

``partition`` < 1024 (``[cluster] partitions`` allows up to 1024), ``index`` < 64 numbers the
runs one event starts (one per workflow routed to its symbol, in the config's workflow order),
``seq`` < 2**47 is the stream sequence of the event that started the run.

What the wiring must keep for the guarantee: the id is the *starting* event's; an event folded
into a run already pending (conflation) starts none and takes no id. Conflation depends on
timing, so a replay may conflate differently and start a run the first owner folded away: that
run has a new (event-derived) id and may order -- a decision on newer data, never the same
order twice.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["MAX_RUNS_PER_EVENT", "RunOrigin", "run_id", "run_origin"]

_PARTITION_BITS: Final = 10
_INDEX_BITS: Final = 6
_SEQ_SHIFT: Final = _PARTITION_BITS + _INDEX_BITS
MAX_RUNS_PER_EVENT: Final = 1 << _INDEX_BITS
_MAX_PARTITIONS: Final = 1 << _PARTITION_BITS
_MAX_SEQ: Final = (1 << (63 - _SEQ_SHIFT)) - 1


class RunOrigin(NamedTuple):
    partition: int
    seq: int
    run_index: int  # not ``index``: that is tuple's method


def run_id(partition: int, seq: int, index: int = 0) -> int:
    """The id of the ``index``-th run started by the event at stream sequence ``seq`` of
    ``partition``: the same on every node and every replay."""
    if not 0 <= partition < _MAX_PARTITIONS:
        raise ValueError(f"partition {partition} is outside 0..{_MAX_PARTITIONS - 1}")
    if not 1 <= seq <= _MAX_SEQ:
        raise ValueError(f"stream sequence {seq} is outside 1..{_MAX_SEQ}")
    if not 0 <= index < MAX_RUNS_PER_EVENT:
        raise ValueError(
            f"run index {index} is outside 0..{MAX_RUNS_PER_EVENT - 1}: one event starts at "
            f"most {MAX_RUNS_PER_EVENT} runs (one per workflow routed to its symbol)"
        )
    return seq << _SEQ_SHIFT | index << _PARTITION_BITS | partition


def run_origin(run: int) -> RunOrigin:
    """``(partition, seq, index)`` of a :func:`run_id` (for logs and the status report)."""
    if run < 1 << _SEQ_SHIFT:
        raise ValueError(f"{run} is not a cluster run id (no stream sequence in it)")
    return RunOrigin(
        run & (_MAX_PARTITIONS - 1),
        run >> _SEQ_SHIFT,
        (run >> _PARTITION_BITS) & (MAX_RUNS_PER_EVENT - 1),
    )
