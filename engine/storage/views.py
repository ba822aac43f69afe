"""SQL that reads stored records, generated from their declarations (:mod:`engine.core.layout`).

A view that reads a JSON record addresses its fields by position (``value->>3``). Written by
hand, each such position is one more place to change when a record gains a field; generated
here, a position comes from the record's declaration, and so does the default a view fills in
for a field a compact record leaves out. Migrations from v6 on (:mod:`engine.storage.schema`)
create the views that read run and step records from this module. Older migrations keep their
literal SQL (they describe the records as they were then), and
``tests/unit/test_layout.py`` checks every position left in the current schema against the
declarations.

Fields are only ever appended, with a default, so a view generated now reads every record
stored before it the same way.
"""

from __future__ import annotations

from typing import Final

import msgspec

from engine.core.layout import (
    STEP_SHORT,
    CompletedRunRecord,
    StepRecord,
    position,
)

__all__ = ["RUNS_VIEW", "STEPS_VIEW", "field", "text_field"]


def text_field(alias: str, record: type[msgspec.Struct], name: str) -> str:
    """``alias->>N``: field ``name`` of the record in ``alias``, as an SQL value."""
    return f"{alias}->>{position(record, name)}"


def field(alias: str, record: type[msgspec.Struct], name: str) -> str:
    """``alias->N``: field ``name`` of the record in ``alias``, as JSON text."""
    return f"{alias}->{position(record, name)}"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {value!r}")


def _defaulted(alias: str, record: type[msgspec.Struct], name: str) -> str:
    """Field ``name``, or its declared default where a compact record leaves it out."""
    default = record.__struct_defaults__[
        position(record, name) - (len(record.__struct_fields__) - len(record.__struct_defaults__))
    ]
    return f"COALESCE({text_field(alias, record, name)}, {_literal(default)})"


def _runs_view() -> str:
    c = CompletedRunRecord

    def get(name: str) -> str:
        return text_field("r.value", c, name)

    columns = ("id, workflow, symbol, state, outcome, priority, tick, tick_ts, created_at, "
               "finished_at, error, steps")
    return f"""CREATE VIEW runs ({columns}) AS
    SELECT {columns}
    FROM run_rows
    UNION ALL
    SELECT {get("id")}, {get("workflow")}, {get("symbol")}, 'completed',
           {_defaulted("r.value", c, "outcome")}, {get("priority")}, NULL, {get("tick_ts")},
           ({get("created_us")}) / 1e6, ({get("finished_us")}) / 1e6, {get("error")},
           {field("r.value", c, "steps")}
    FROM run_blocks b, json_each(b.records) r"""


def _steps_view() -> str:
    s = StepRecord

    def get(name: str) -> str:
        return text_field("s.value", s, name)

    def since_created(name: str) -> str:
        return f"r.created_at + ({get(name)}) / 1e6"

    # A short step completed with no output: 'null', as a step with a null output reads.
    output = (
        f"CASE WHEN json_array_length(s.value) = {STEP_SHORT} THEN CAST('null' AS BLOB)\n"
        f"                WHEN {get('output_stored')} THEN "
        f"CAST({field('s.value', s, 'output')} AS BLOB) END"
    )
    return f"""CREATE VIEW steps (run_id, step, state, attempts, preemptions, started_at,
                   finished_at, error, output, ready_at) AS
    SELECT r.id, {get("name")}, {_defaulted("s.value", s, "state")},
           {_defaulted("s.value", s, "attempts")}, {_defaulted("s.value", s, "preemptions")},
           {since_created("started_us")}, {since_created("finished_us")}, {get("error")},
           {output},
           {since_created("ready_us")}
    FROM runs r, json_each(r.steps) s"""


RUNS_VIEW: Final = _runs_view()
"""The view `runs`: `run_rows` and every record of `run_blocks`, as the v2 table read."""
STEPS_VIEW: Final = _steps_view()
"""The view `steps`: the steps of every run in `runs`, as the v2 table read, and since v6
when each step was last queued (``ready_at``)."""
