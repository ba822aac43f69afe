"""Schema v6: a step stored in full says when it was last queued (`ready_us`, the view's
`ready_at`). A v5 file with data is migrated and reads the same; recovery reads step records
by their declaration, old and new, and refuses steps that are not step records."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.config import BrokerSettings, compile_workflows, loads_config
from engine.core.errors import StorageError
from engine.core.events import Tick
from engine.core.fsm import RunState, StepState
from engine.core.runs import Run
from engine.core.symbols import SymbolState, SymbolTable
from engine.storage.db import open_database
from engine.storage.recovery import StoredStep, load_state
from engine.storage.rows import Journal, Rows
from engine.storage.schema import MIGRATIONS, SCHEMA_VERSION
from tests.unit.engine_harness import TWO_STEP_CONFIG

CONFIG = TWO_STEP_CONFIG

# As v5 stored them: a completed run in a block (a short step and a step stored in full), and
# a run in flight with a row of its own (one step completed at its second attempt, with an
# output; one failed attempt waiting for its retry).
_BLOCK = (
    '[[1,"wf","AAPL",1,5.0,1000000000,1002000000,'
    '[["a",0,500000],["b",600000,900000,"completed",1,1,null,{"y":2},true]]]]'
)
_IN_FLIGHT = (
    '[["a",0,500000,"completed",2,0,null,{"x":1},true],'
    '["b",600000,null,"pending",1,0,"boom",null,true]]'
)


def _v5_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    for version in range(1, 6):
        conn.executescript(MIGRATIONS[version])
    conn.execute("INSERT INTO meta VALUES ('schema_version', '5')")
    conn.execute(
        "INSERT INTO run_blocks (first_id, last_id, finished_at, runs, records) "
        "VALUES (1, 1, 1002.0, 1, ?)", (_BLOCK,)
    )
    conn.execute(
        "INSERT INTO run_rows (id, workflow, symbol, state, outcome, priority, tick, tick_ts, "
        "created_at, finished_at, error, steps) VALUES (2, 'wf', 'MSFT', 'running', NULL, 1, "
        "'{\"symbol\":\"MSFT\",\"ts\":6.0,\"price\":3.0}', 6.0, 2000.0, NULL, NULL, ?)",
        (_IN_FLIGHT,),
    )
    conn.commit()
    conn.close()


def _read(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


_STEPS = ("SELECT run_id, step, state, attempts, preemptions, started_at, finished_at, error, "
          "output FROM steps ORDER BY run_id, step")


def test_a_v5_file_with_data_is_migrated_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    _v5_file(path)
    runs_before = _read(path, "SELECT * FROM runs ORDER BY id")
    steps_before = _read(path, _STEPS)
    assert len(steps_before) == 4

    async def migrate() -> None:
        await (await open_database(path)).close()

    asyncio.run(migrate())
    assert _read(path, "SELECT value FROM meta WHERE key='schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    assert SCHEMA_VERSION == 6
    assert _read(path, "SELECT * FROM runs ORDER BY id") == runs_before
    assert _read(path, _STEPS) == steps_before
    # Stored before v6: when those steps were queued is not known.
    assert _read(path, "SELECT ready_at FROM steps") == [(None,)] * 4


def _run(run_id: int) -> Run:
    """Run ``run_id``, triggered at engine time 10.0: its first step completed at its second
    attempt (queued at 10.25), its second running (queued at 10.75)."""
    wf = compile_workflows(loads_config(CONFIG))["wf"]
    run = Run(run_id, wf, SymbolState(run_id, "AAPL", 1), Tick("AAPL", 5.0, 2.0), 1, 10.0)
    first, second = run.steps
    first.ready_at = 10.25
    first.advance(StepState.RUNNING)
    first.started_at, first.attempts, first.output = 10.5, 2, {"x": 1}
    first.advance(StepState.COMPLETED)
    first.finished_at = 10.625
    run.advance(RunState.RUNNING)
    second.ready_at = 10.75
    second.advance(StepState.RUNNING)
    second.started_at = 10.875
    return run


def test_after_the_migration_a_step_stored_in_full_says_when_it_was_queued(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    _v5_file(path)
    broker = BrokerSettings()

    async def scenario() -> Any:
        conn = await open_database(path)
        try:
            rows = Rows(now=3000.0, offset=1000.0)
            rows.add_runs([_run(3)])
            rows.encode(Journal(0, 0, 0, 0.0, 0.0, "[]"))
            await rows.write(conn)
            return await load_state(conn, str(path), SymbolTable(), broker)
        finally:
            await conn.close()

    state = asyncio.run(scenario())
    assert _read(
        path, "SELECT step, state, attempts, started_at, ready_at FROM steps WHERE run_id = 3 "
        "ORDER BY step"
    ) == [("a", "completed", 2, 1010.5, 1010.25), ("b", "running", 0, 1010.875, 1010.75)]
    # Recovery reads the v5 run in flight and the new one alike: their completed steps.
    assert {r.id: r.completed for r in state.runs} == {
        2: (StoredStep("a", {"x": 1}, 2, True, 0, 500000, 0),),
        3: (StoredStep("a", {"x": 1}, 2, True, 500000, 625000, 0),),
    }


@pytest.mark.parametrize(
    "steps",
    [
        '[["a", "soon", 5]]',  # a time that is not a number
        '[["a", 0, 5, "completed", "twice"]]',  # attempts that are not a count
        '{"a": [0, 5]}',  # not an array of steps
        '[["a"]]',  # too short to be a step
        "not json",
    ],
)
def test_steps_that_are_not_step_records_are_refused_naming_the_file_and_run(
    tmp_path: Path, steps: str
) -> None:
    """Recovery refuses to start rather than resume or redo the run on a guess; nothing in the
    file is changed."""
    path = tmp_path / "bad.db"
    _v5_file(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE run_rows SET steps = ? WHERE id = 2", (steps,))
    conn.commit()
    conn.close()

    async def scenario() -> None:
        conn = await open_database(path)
        try:
            await load_state(conn, str(path), SymbolTable(), BrokerSettings())
        finally:
            await conn.close()

    with pytest.raises(
        StorageError, match=r"bad\.db: cannot read state: run 2 in run_rows: its steps are not "
        r"step records"
    ):
        asyncio.run(scenario())
    assert _read(path, "SELECT steps FROM run_rows WHERE id = 2") == [(steps,)]
