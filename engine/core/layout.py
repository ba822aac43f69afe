"""The stored records, each declared once: field names, positions and types.

The state database keeps runs, steps, symbols and journal events as JSON arrays (an array
encodes and stores in a fraction of an object's cost: docs/storage.md, "Cost"). A field is
therefore addressed by its position, and every place that reads or writes one takes that
position from here:

* the builders in :mod:`engine.core.records` (compiled; the core, so this module is in the
  core too) build records in this order -- ``tests/unit/test_layout.py`` converts what each of
  them makes (both builds) into the struct declared here;
* recovery (:mod:`engine.storage.recovery`) decodes step records into :class:`StepRecord`, by
  name;
* the SQL views and triggers of the current schema read ``record->>N`` with ``N`` from
  :func:`position` (:mod:`engine.storage.views` generates them), and the test checks every
  ``->>N`` / ``->N`` left in the schema against these declarations.

Each record is an ``array_like`` msgspec struct: its fields in declaration order are the
array's positions. Fields with a default may be missing at the end of a stored array (older
records, compact forms); a new field is only ever appended, with a default, so records already
stored keep their meaning. Times are integer microseconds (an integer encodes several times
faster than a float).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "COMPLETED_RUN_SHORT",
    "JOURNAL_SHORT",
    "RECORDS",
    "STEP_SHORT",
    "CompletedRunRecord",
    "JournalRecord",
    "RunRowRecord",
    "StepRecord",
    "SymbolRecord",
    "column",
    "field_at",
    "position",
]


class StepRecord(msgspec.Struct, array_like=True, frozen=True):
    """A step of a run, inside its run's record (``steps``). Times are microseconds after
    the run's creation. A step completed at its first attempt, unpreempted, without output
    or error, is stored as its first :data:`STEP_SHORT` fields alone."""

    name: str
    started_us: int | None  # when its last attempt started
    finished_us: int | None  # when it ended (terminal states only)
    state: str = "completed"
    attempts: int = 1  # finished attempts
    preemptions: int = 0
    error: str | None = None
    output: Any = None
    # Whether ``output`` is the step's output (false: it could not be encoded; recovery runs
    # the run again from its first step). Migrated v2 files hold 0 or 1.
    output_stored: bool | int = True
    # v6: when the step was last queued ready to run (null: not queued since the daemon
    # started, e.g. a step restored completed). Stored for steps kept in full.
    ready_us: int | None = None


class RunRowRecord(msgspec.Struct, array_like=True, frozen=True):
    """A run with a row of its own in `run_rows` (in flight with progress, failed,
    cancelled): one record per run in the commit's batch, the table's columns in order."""

    id: int
    workflow: str
    symbol: str
    state: str
    outcome: str | None
    priority: int
    tick: Any  # the tick, as its JSON text
    tick_ts: float | None  # null: a non-finite ts (stored as +inf)
    created_at: float  # wall-clock seconds
    finished_at: float | None
    error: str | None
    steps: list[StepRecord]


class CompletedRunRecord(msgspec.Struct, array_like=True, frozen=True):
    """A completed run in its commit's block (`run_blocks`). Its state is the block's and
    its tick is left out; outcome and error follow only when not "completed" and none."""

    id: int
    workflow: str
    symbol: str
    priority: int
    tick_ts: float | None
    created_us: int  # microseconds since the epoch
    finished_us: int
    steps: list[StepRecord]
    outcome: str = "completed"
    error: str | None = None


class SymbolRecord(msgspec.Struct, array_like=True, frozen=True):
    """A symbol's state in `symbol_rows.record`."""

    phase: str
    status: str
    priority: int
    last_processed_us: int | None  # microseconds since the epoch
    last_error: str | None
    last_tick: Any  # a Tick as a JSON object, or null


class JournalRecord(msgspec.Struct, array_like=True, frozen=True):
    """An accepted event in its commit's journal block. The payload names its type and
    symbol; an event stored as the bytes it came in carries them after it."""

    seq: int
    received_us: int  # microseconds since the epoch
    payload: Any
    type: str | None = None
    symbol: str | None = None


STEP_SHORT: Final = 3
"""The fields of a step stored in short (``[name, started_us, finished_us]``)."""
COMPLETED_RUN_SHORT: Final = 8
"""The fields of a completed run's record when its outcome is "completed" and it has no
error."""
JOURNAL_SHORT: Final = 3
"""The fields of a journal record whose payload names its type and symbol."""

RECORDS: Final[tuple[type[msgspec.Struct], ...]] = (
    StepRecord, RunRowRecord, CompletedRunRecord, SymbolRecord, JournalRecord,
)

# The column of a view (docs/storage.md) that a field feeds, where its name differs.
_COLUMNS: Final[dict[type[msgspec.Struct], dict[str, str]]] = {
    StepRecord: {"name": "step", "started_us": "started_at", "finished_us": "finished_at",
                 "output_stored": "output", "ready_us": "ready_at"},
    CompletedRunRecord: {"created_us": "created_at", "finished_us": "finished_at"},
    SymbolRecord: {"last_processed_us": "last_processed"},
    JournalRecord: {"received_us": "received_at"},
}


def position(record: type[msgspec.Struct], name: str) -> int:
    """The position of field ``name`` in ``record``'s stored array."""
    try:
        return record.__struct_fields__.index(name)
    except ValueError:
        raise KeyError(f"{record.__name__} has no field {name!r}") from None


def field_at(record: type[msgspec.Struct], index: int) -> str:
    """The name of the field stored at position ``index`` of ``record``."""
    fields = record.__struct_fields__
    if not 0 <= index < len(fields):
        raise IndexError(f"{record.__name__} has {len(fields)} fields, not a field {index}")
    return fields[index]


def column(record: type[msgspec.Struct], name: str) -> str:
    """The view column that field ``name`` of ``record`` feeds."""
    position(record, name)  # a clear error for a field that does not exist
    return _COLUMNS.get(record, {}).get(name, name)
