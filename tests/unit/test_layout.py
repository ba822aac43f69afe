"""Each stored record is declared once (engine/core/layout.py): every position the schema's SQL
reads and every record the builders make agree with the declarations."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.config import compile_workflows, loads_config
from engine.core.events import DataReady, Tick
from engine.core.fsm import RunState, StepState
from engine.core.layout import (
    COMPLETED_RUN_SHORT,
    JOURNAL_SHORT,
    RECORDS,
    STEP_SHORT,
    CompletedRunRecord,
    JournalRecord,
    RunRowRecord,
    StepRecord,
    SymbolRecord,
    column,
    field_at,
    position,
)
from engine.core.records import (
    FinishedRuns,
    JournalLog,
    completed_record,
    run_record,
    symbol_batch,
    symbol_record,
)
from engine.core.runs import Run
from engine.core.symbols import SymbolState, SymbolTable
from engine.storage.db import open_database
from tests.unit.engine_harness import TWO_STEP_CONFIG

CONFIG = TWO_STEP_CONFIG

# The JSON record each view or trigger of the current schema reads, by the SQL expression that
# holds it. A view or trigger reading a record not listed here fails the test: declare it.
READS: dict[str, tuple[str, type[msgspec.Struct]]] = {
    "runs": ("r.value", CompletedRunRecord),
    "steps": ("s.value", StepRecord),
    "symbols": ("record", SymbolRecord),
    "journal": ("e.value", JournalRecord),
    "commits_insert": ("r.value", RunRowRecord),
}


def _split(text: str) -> list[str]:
    """``text`` split at its top-level commas (not inside parentheses or quotes)."""
    parts: list[str] = []
    depth, start, quote = 0, 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _select_list(sql: str) -> str:
    """The select list of the one SELECT in ``sql`` that reads JSON (its top-level FROM ends
    it)."""
    for segment in re.split(r"\bUNION ALL\b", sql):
        if "->" not in segment:
            continue
        body = segment[re.search(r"\bSELECT\b", segment).end():]  # type: ignore[union-attr]
        depth = 0
        for m in re.finditer(r"[()]|\bFROM\b", body):
            if m.group() == "(":
                depth += 1
            elif m.group() == ")":
                depth -= 1
            elif depth == 0:
                return body[: m.start()]
    raise AssertionError(f"no SELECT reading JSON in {sql}")


def _positions(expr: str, alias: str) -> list[int]:
    return [int(n) for n in re.findall(re.escape(alias) + r"\s*->>?\s*(\d+)", expr)]


def _check(name: str, columns: list[str], exprs: list[str]) -> int:
    """Each expression of ``exprs`` feeds the column beside it in ``columns``: the record's
    fields it reads must exist, and one of them must feed that column; every field that feeds
    one of ``columns`` must be read by that column's expression. Returns the positions
    checked."""
    alias, record = READS[name]
    assert len(columns) == len(exprs), (name, columns, exprs)
    checked = 0
    for col, expr in zip(columns, exprs, strict=True):
        read = _positions(expr, alias)
        fed = [column(record, field_at(record, n)) for n in read]  # IndexError past the end
        assert not read or col in fed, f"{name}.{col} reads {expr!r}: fields {fed}"
        for f in record.__struct_fields__:
            if column(record, f) == col:
                assert position(record, f) in read, f"{name}.{col} does not read {f}: {expr!r}"
        checked += len(read)
    return checked


def _schema(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "t.db"

    async def make() -> None:
        await (await open_database(path)).close()

    asyncio.run(make())
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type IN ('view', 'trigger')"
        ).fetchall())
    finally:
        conn.close()


def test_every_json_position_in_the_schema_is_the_declared_field(tmp_path: Path) -> None:
    schema = _schema(tmp_path)
    checked = 0
    for name, sql in schema.items():
        if "->" not in sql:
            continue
        assert name in READS, f"{name} reads a JSON record not declared in READS: {sql}"
        if name == "commits_insert":
            # The runs with a row of their own: run_rows' columns, from each record in turn.
            insert = sql[sql.index("INSERT INTO run_rows"):]
            cols = _split(insert[insert.index("(") + 1: insert.index(")")])
            checked += _check(name, cols, _split(_select_list(insert)))
        else:
            cols = _split(sql[sql.index("(") + 1: sql.index(")")])
            checked += _check(name, cols, _split(_select_list(sql)))
    # run rows 12, runs view 10, steps view 10, symbols view 6, journal view 6 (with the
    # payload's type and symbol)
    assert checked >= 40


def test_the_symbols_triggers_write_the_declared_record(tmp_path: Path) -> None:
    schema = _schema(tmp_path)
    for name in ("symbols_insert", "symbols_update"):
        sql = schema[name]
        body = sql[sql.index("json_array(") + len("json_array("):]
        depth, end = 1, 0
        while depth:
            depth += {"(": 1, ")": -1}.get(body[end], 0)
            end += 1
        args = _split(body[: end - 1])
        assert [re.findall(r"NEW\.(\w+)", a) for a in args] == [
            [column(SymbolRecord, f)] for f in SymbolRecord.__struct_fields__
        ], name


def test_a_position_past_a_record_or_an_unknown_field_is_a_clear_error() -> None:
    with pytest.raises(IndexError, match="StepRecord has 10 fields, not a field 10"):
        field_at(StepRecord, 10)
    with pytest.raises(KeyError, match="RunRowRecord has no field 'nope'"):
        position(RunRowRecord, "nope")
    with pytest.raises(KeyError, match="SymbolRecord has no field 'nope'"):
        column(SymbolRecord, "nope")


def test_the_check_catches_a_view_reading_the_wrong_position() -> None:
    """The check itself: a view column fed from a neighbouring field is caught."""
    with pytest.raises(AssertionError, match=r"steps\.attempts reads"):
        _check("steps", ["attempts"], ["COALESCE(s.value->>5, 1)"])
    with pytest.raises(AssertionError, match=r"steps\.output does not read output_stored"):
        _check("steps", ["output"], ["CAST(s.value->7 AS BLOB)"])
    with pytest.raises(IndexError):
        _check("runs", ["error"], ["r.value->>10"])


def test_compact_forms_are_the_declared_fields_without_their_defaults() -> None:
    for record, short in (
        (StepRecord, STEP_SHORT), (CompletedRunRecord, COMPLETED_RUN_SHORT),
        (JournalRecord, JOURNAL_SHORT),
    ):
        assert len(record.__struct_fields__) - len(record.__struct_defaults__) == short
    for record in RECORDS:
        assert record.__struct_config__.array_like, record


def _wf() -> Any:
    return compile_workflows(loads_config(CONFIG))["wf"]


def _retried_run(run_id: int, state: RunState) -> Run:
    """A run whose first step completed at its second attempt, queued at 10.25 (its trigger
    at 10.0), and whose second step is running."""
    run = Run(run_id, _wf(), SymbolState(run_id, "AAPL", 1), Tick("AAPL", 5.0, 2.0), 1, 10.0)
    first, second = run.steps
    first.ready_at = 10.25
    first.advance(StepState.RUNNING)
    first.started_at, first.attempts, first.output = 10.5, 2, {"x": 1}
    first.advance(StepState.COMPLETED)
    first.finished_at = 10.75
    run.advance(RunState.RUNNING)
    if state is RunState.RUNNING:
        second.ready_at = 10.8
        second.advance(StepState.RUNNING)
        second.started_at = 10.9
    else:
        run.advance(state)
        run.finished_at, run.outcome, run.error = 12.0, state.value, "boom"
    return run


def test_a_run_row_is_the_declared_record() -> None:
    row = run_record(_retried_run(7, RunState.RUNNING), 1000.0, None)
    assert row is not None
    rec = msgspec.convert(row, RunRowRecord)
    assert (rec.id, rec.workflow, rec.symbol, rec.state, rec.priority) == (
        7, "wf", "AAPL", "running", 1
    )
    assert msgspec.json.decode(rec.tick, type=Tick) == Tick("AAPL", 5.0, 2.0)
    assert (rec.tick_ts, rec.created_at, rec.finished_at) == (5.0, 1010.0, None)
    first, second = rec.steps
    assert first == StepRecord("a", 500_000, 750_000, "completed", 2, 0, None, {"x": 1}, True,
                               250_000)
    assert second == StepRecord("b", 900_000, None, "running", 0, 0, None, None, True, 800_000)


def test_a_completed_run_in_its_block_is_the_declared_record() -> None:
    failed = _retried_run(8, RunState.FAILED)
    rec = msgspec.convert(completed_record(failed, 1000.0), CompletedRunRecord)
    assert (rec.id, rec.created_us, rec.finished_us) == (8, 1_010_000_000, 1_012_000_000)
    assert (rec.outcome, rec.error) == ("failed", "boom")
    assert rec.steps[0].ready_us == 250_000

    plain = Run(9, _wf(), SymbolState(9, "AAPL", 1), Tick("AAPL", 5.0, 2.0), 1, 10.0)
    for i, step in enumerate(plain.steps):
        step.advance(StepState.RUNNING)
        step.started_at, step.attempts = 10.0 + i, 1
        step.advance(StepState.COMPLETED)
        step.finished_at = 10.5 + i
    plain.advance(RunState.RUNNING)
    plain.advance(RunState.COMPLETED)
    plain.finished_at, plain.outcome = 12.0, "completed"
    finished = FinishedRuns()
    finished.add(plain, 1000.0)  # written piece by piece
    finished.add(failed, 1000.0)  # written whole
    block = msgspec.json.decode(finished.block(), type=list[CompletedRunRecord])
    assert [r.id for r in block] == [9, 8]
    assert block[0].steps == [StepRecord("a", 0, 500_000), StepRecord("b", 1_000_000, 1_500_000)]
    assert (block[0].outcome, block[0].error) == ("completed", None)
    assert block[1] == rec


def test_symbol_and_journal_records_are_the_declared_records() -> None:
    table = SymbolTable()
    state = table.register("AAPL", 3)
    table.mark_data_ready(state, Tick("AAPL", 5.0, 2.0))
    table.mark_processing(state)
    table.mark_completed(state, 1.5)
    rec = msgspec.convert(symbol_record(state), SymbolRecord)
    assert (rec.phase, rec.status, rec.priority, rec.last_processed_us) == (
        state.phase.value, "completed", 3, 1_500_000
    )
    batch = msgspec.json.decode(symbol_batch([state]), type=dict[str, SymbolRecord])
    assert batch[state.key].last_tick == {"symbol": "AAPL", "ts": 5.0, "price": 2.0,
                                          "volume": 0.0, "bid": None, "ask": None}
    assert batch[state.key] == msgspec.convert(msgspec.to_builtins(symbol_record(state)),
                                               SymbolRecord)

    journal = JournalLog(0, lambda n: None)
    journal.add("DATA_READY", DataReady(symbol="AAPL", ts=1.0, price=2.0), 3.0)
    journal.add_raw("DATA_READY", "MSFT", b'{"symbol":"MSFT"}', 4.0)
    records = msgspec.json.decode(journal.take()[5], type=list[JournalRecord])
    assert [(r.seq, r.received_us, r.type, r.symbol) for r in records] == [
        (1, 3_000_000, None, None), (2, 4_000_000, "DATA_READY", "MSFT")
    ]
    assert records[0].payload["type"] == "DATA_READY"
