"""Recovery at start, in process: stored runs resume from their last completed step."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.config import loads_config
from engine.core.events import DataReady, Tick
from engine.service.daemon import Engine
from tests.unit import gates
from tests.unit import recovery_actions as ra

CONFIG = """
[engine]
agents = 2

[workflows.wf]
priority = 0
max_concurrent = 2

[[workflows.wf.steps]]
name = "first"
action = "tests.unit.recovery_actions:first"

[[workflows.wf.steps]]
name = "second"
action = "tests.unit.recovery_actions:second"
depends_on = ["first"]

[metrics]
enabled = false

[storage]
path = "{db}"
"""


def _engine(db: Path) -> Engine:
    return Engine(loads_config(CONFIG.format(db=db)), sources=[], persist=True)


async def _run_until_idle(engine: Engine, *events: DataReady) -> None:
    async with engine.session():
        for event in events:
            engine.submit_nowait(event)
        async with asyncio.timeout(10):
            await engine.wait_idle()


def _seed_a_crashed_run(db: Path, created_at: object = 1.0, preemptions: int = 0) -> None:
    """A first session journals a tick; then the file is edited to what a SIGKILL between the
    two steps leaves: run 1 running, its first step completed with a stored output."""
    asyncio.run(_run_until_idle(_engine(db), DataReady(symbol="AAA", ts=1.0, price=10.0)))
    tick = msgspec.json.encode(Tick("AAA", 1.0, 10.0))
    conn = sqlite3.connect(db)
    with conn:
        # The completed run goes back in flight: out of its block, into a row of its own. Its
        # steps: [name, started_us, finished_us, state, attempts, preemptions, error, output,
        # output stored].
        steps = (
            f'[["first", 10, 20, "completed", 1, {preemptions}, null, {{"value": 42.0}}, true]]'
        )
        conn.execute("DELETE FROM run_blocks")
        conn.execute(
            "INSERT INTO run_rows (id, workflow, symbol, state, priority, tick, tick_ts, "
            "created_at, steps) VALUES (1, 'wf', 'AAA', 'running', 0, ?, 1.0, ?, ?)",
            (tick, created_at, steps),
        )
        conn.execute("UPDATE symbols SET phase='data_ready', status='processing'")
    conn.close()
    gates.BOARD.log.clear()


def test_a_run_resumes_after_its_last_completed_step_with_the_stored_output(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    _seed_a_crashed_run(db)
    engine = _engine(db)
    asyncio.run(_run_until_idle(engine))
    assert engine.persistence is not None
    report = engine.persistence.report
    assert (report.runs_resumed, report.steps_reused, report.next_run_id) == (1, 1, 2)
    # The completed step was not run again; the next one got its stored output.
    assert ra.calls() == [("second", 1, 10.0, {"first": {"value": 42.0}})]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, state FROM runs").fetchall() == [(1, "completed")]
    assert conn.execute("SELECT step, state FROM steps ORDER BY step").fetchall() == [
        ("first", "completed"), ("second", "completed"),
    ]
    assert conn.execute("SELECT status FROM symbols").fetchall() == [("completed",)]
    # It keeps the instant it was created, and the first step its times, as stored before the
    # crash -- not the restart's (to within the microseconds the clocks' reading moves); the
    # step's times after the run's creation exactly, in whole microseconds, as stored.
    (created,) = conn.execute("SELECT created_at FROM runs").fetchone()
    assert created == pytest.approx(1.0, abs=1e-4)
    assert _first_step_us(conn) == (10, 20, 0)
    conn.close()


def _first_step_us(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """The first step of the one completed run: started and finished, in microseconds after
    the run's creation, as stored, and its preemptions."""
    row = conn.execute(
        "SELECT s.value->>1, s.value->>2, COALESCE(s.value->>5, 0) "
        "FROM run_blocks b, json_each(b.records) r, json_each(r.value->7) s "
        "WHERE s.value->>0 = 'first'"
    ).fetchone()
    return (row[0], row[1], row[2])


@pytest.mark.parametrize("stored", ["garbage", float("inf"), float("-inf")])
def test_a_stored_creation_time_that_is_not_a_time_is_taken_as_now(
    tmp_path: Path, stored: object
) -> None:
    """REAL affinity keeps text as text and infinities are storable: such a row must not stop
    the daemon from starting (nor reach the latency histogram as an infinity): the run resumes
    as if created now."""
    db = tmp_path / "t.db"
    _seed_a_crashed_run(db, created_at=stored)
    engine = _engine(db)
    asyncio.run(_run_until_idle(engine))
    assert ra.calls() == [("second", 1, 10.0, {"first": {"value": 42.0}})]
    conn = sqlite3.connect(db)
    (created,) = conn.execute("SELECT created_at FROM runs").fetchone()
    assert created > 1.7e9  # this run's wall-clock start, not the stored value
    conn.close()


def test_a_resumed_step_keeps_its_preemptions(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    _seed_a_crashed_run(db, preemptions=2)
    asyncio.run(_run_until_idle(_engine(db)))
    conn = sqlite3.connect(db)
    assert _first_step_us(conn) == (10, 20, 2)
    assert conn.execute("SELECT preemptions FROM steps WHERE step = 'first'").fetchone() == (2,)
    conn.close()


def test_a_newer_tick_stored_before_the_crash_gets_its_follow_up_run(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    _seed_a_crashed_run(db)
    newer = msgspec.json.encode(Tick("AAA", 2.0, 11.0))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE symbols SET last_tick=?", (newer,))
    conn.close()
    asyncio.run(_run_until_idle(_engine(db)))
    assert [(c[0], c[1], c[2]) for c in ra.calls()] == [
        ("second", 1, 10.0),  # the resumed run finishes on its own tick
        ("first", 2, 11.0),  # then the newer tick runs, with a fresh run id
        ("second", 2, 11.0),
    ]


def test_run_ids_continue_after_the_stored_ones(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    asyncio.run(_run_until_idle(_engine(db), DataReady(symbol="AAA", ts=1.0, price=10.0)))
    asyncio.run(_run_until_idle(_engine(db), DataReady(symbol="AAA", ts=2.0, price=11.0)))
    assert [c[1] for c in ra.calls()] == [1, 1, 2, 2]


def test_a_stored_run_of_a_removed_workflow_is_dropped_and_recorded(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    _seed_a_crashed_run(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE run_rows SET workflow='gone'")
    conn.close()
    engine = _engine(db)
    asyncio.run(_run_until_idle(engine))
    assert engine.persistence is not None
    assert engine.persistence.report.runs_dropped == 1
    conn = sqlite3.connect(db)
    # The data is not lost with the run: the symbol is re-triggered on today's workflows.
    assert conn.execute("SELECT id, workflow, state, error FROM runs ORDER BY id").fetchall() == [
        (1, "gone", "cancelled", "workflow no longer configured"),
        (2, "wf", "completed", None),
    ]
    conn.close()


def test_the_journal_is_stamped_with_wall_time_and_survives_retention(tmp_path: Path) -> None:
    import time

    db = tmp_path / "t.db"
    before = time.time()
    engine = _engine(db)

    async def scenario() -> None:
        async with engine.session():
            engine.submit_nowait(DataReady(symbol="AAA", ts=1.0, price=10.0))
            async with asyncio.timeout(10):
                await engine.wait_idle()
            assert engine.persistence is not None
            assert engine.persistence.writer is not None
            await engine.persistence.writer.flush()
            assert await engine.persistence.writer.prune() == 0  # nothing is a day old

    asyncio.run(scenario())
    conn = sqlite3.connect(db)
    (received_at,) = conn.execute("SELECT received_at FROM journal").fetchone()
    conn.close()
    assert before <= received_at <= time.time()


def test_run_ids_and_journal_seqs_are_never_reused_after_retention_pruned_them(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    asyncio.run(_run_until_idle(_engine(db), DataReady(symbol="AAA", ts=1.0, price=10.0)))
    conn = sqlite3.connect(db)
    with conn:  # what retention leaves after a quiet weekend: no runs, no journal
        for table in ("run_rows", "run_blocks", "journal_blocks"):
            conn.execute(f"DELETE FROM {table}")
    conn.close()
    engine = _engine(db)
    asyncio.run(_run_until_idle(engine, DataReady(symbol="AAA", ts=2.0, price=11.0)))
    assert [c[1] for c in ra.calls()] == [1, 1, 2, 2]  # run 2, not run 1 again
    assert engine.persistence is not None
    assert engine.persistence.report.journal_seq == 1
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT seq FROM journal").fetchall() == [(2,)]
    conn.close()


GATED = """
[engine]
agents = 1
drain_timeout_s = 0

[workflows.wf]
priority = 0
max_concurrent = 1

[[workflows.wf.steps]]
name = "slow"
action = "tests.unit.recovery_actions:gated"
timeout_ms = 60000

[metrics]
enabled = false

[storage]
path = "{db}"
"""


def test_a_run_cut_by_the_drain_deadline_stays_in_flight_and_resumes_with_its_id(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"

    async def first() -> None:
        gates.BOARD.reset_gates()
        started = gates.BOARD.gate(ra.STARTED)
        engine = Engine(loads_config(GATED.format(db=db)), sources=[], persist=True)
        async with engine.session():
            engine.submit_nowait(DataReady(symbol="AAA", ts=1.0, price=10.0))
            async with asyncio.timeout(10):
                await started.wait()
        # Leaving the session passed the (zero) drain deadline with the step still running.

    asyncio.run(first())
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, state FROM runs").fetchall() == [(1, "running")]
    conn.close()

    gates.BOARD.reset_gates()
    gates.BOARD.release_all()
    engine = Engine(loads_config(GATED.format(db=db)), sources=[], persist=True)
    asyncio.run(_run_until_idle(engine))
    assert engine.persistence is not None
    assert engine.persistence.report.runs_restarted == 1
    assert [c[:2] for c in ra.calls()] == [("gated", 1), ("gated", 1)]  # same run id again
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, state FROM runs").fetchall() == [(1, "completed")]
    conn.close()


def test_a_newer_tick_with_the_same_timestamp_still_gets_its_follow_up(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    _seed_a_crashed_run(db)
    same_ts = msgspec.json.encode(Tick("AAA", 1.0, 10.5))  # a second print in the same instant
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE symbols SET last_tick=?", (same_ts,))
    conn.close()
    asyncio.run(_run_until_idle(_engine(db)))
    assert [(c[0], c[1], c[2]) for c in ra.calls()] == [
        ("second", 1, 10.0),
        ("first", 2, 10.5),
        ("second", 2, 10.5),
    ]


OVERLAP = """
[workflows.wf2]
priority = 0
max_concurrent = 2

[[workflows.wf2.steps]]
name = "first"
action = "tests.unit.recovery_actions:first"
"""


def _copy(db: Path, copy: Path) -> None:
    """The database as a SIGKILL at this instant would leave it (what is committed)."""
    source, target = sqlite3.connect(db), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


async def _crash_copy_before_any_step_ends(engine: Engine, copy: Path) -> None:
    """Accept one event while its workflows are paused (its runs wait in the queue), commit,
    and copy the database as a SIGKILL at that instant would leave it."""
    async with engine.session():
        workflows = list(engine.config.workflows)
        for name in workflows:
            engine.pause(name)
        engine.submit_nowait(DataReady(symbol="AAA", ts=1.0, price=10.0))
        assert engine.persistence is not None
        assert engine.persistence.writer is not None
        await engine.persistence.writer.flush()
        assert ra.calls() == []
        _copy(engine.persistence.path, copy)
        for name in workflows:
            engine.resume(name)
        async with asyncio.timeout(10):
            await engine.wait_idle()


def test_a_run_with_no_progress_is_not_stored_and_its_symbol_is_triggered_again(
    tmp_path: Path,
) -> None:
    db, crashed = tmp_path / "t.db", tmp_path / "crashed.db"
    asyncio.run(_crash_copy_before_any_step_ends(_engine(db), crashed))
    conn = sqlite3.connect(crashed)
    # Only the symbol row and the journal say what is left to do; no row for the run.
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
    assert conn.execute("SELECT phase, status FROM symbols").fetchall() == [
        ("data_ready", "pending"),
    ]
    conn.close()
    gates.BOARD.log.clear()
    engine = _engine(crashed)
    asyncio.run(_run_until_idle(engine))
    assert engine.persistence is not None
    assert engine.persistence.report.symbols_waiting == 1
    assert [(c[0], c[2]) for c in ra.calls()] == [("first", 10.0), ("second", 10.0)]
    conn = sqlite3.connect(crashed)
    assert conn.execute("SELECT state, tick_ts FROM runs").fetchall() == [("completed", 1.0)]
    conn.close()


def test_where_routes_overlap_runs_are_stored_from_the_start_and_each_runs_once(
    tmp_path: Path,
) -> None:
    """Two workflows routed to one symbol: a re-trigger of the symbol would redo the one that
    finished, so a run waiting in the queue is stored and recovery resumes exactly that run."""
    db, crashed = tmp_path / "t.db", tmp_path / "crashed.db"
    config = CONFIG.format(db=db) + OVERLAP

    def engine(path: Path) -> Engine:
        return Engine(
            loads_config(config.replace(str(db), str(path))), sources=[], persist=True
        )

    asyncio.run(_crash_copy_before_any_step_ends(engine(db), crashed))
    conn = sqlite3.connect(crashed)
    assert conn.execute("SELECT workflow, state FROM runs ORDER BY workflow").fetchall() == [
        ("wf", "pending"), ("wf2", "pending"),
    ]
    conn.close()
    gates.BOARD.log.clear()
    recovered = engine(crashed)
    asyncio.run(_run_until_idle(recovered))
    assert recovered.persistence is not None
    assert recovered.persistence.report.runs_restarted == 2
    assert sorted((c[0], c[1]) for c in ra.calls()) == [("first", 1), ("first", 2), ("second", 1)]
    conn = sqlite3.connect(crashed)
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE state = 'completed'").fetchone() == (2,)
    conn.close()


GATE_ONE = """
[engine]
agents = 2

[workflows.wf]
priority = 0
max_concurrent = {mc}

[[workflows.wf.steps]]
name = "g"
action = "tests.unit.recovery_actions:gated"
timeout_ms = 60000
{more}
[metrics]
enabled = false

[storage]
path = "{db}"
"""
FAILING_SIBLING = """
[[workflows.wf.steps]]
name = "bad"
action = "tests.unit.recovery_actions:fail_now"
"""


async def _until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - engine state, no event to wait on
            await asyncio.sleep(0)


def test_a_step_that_finishes_after_its_run_failed_is_stored(tmp_path: Path) -> None:
    """The run fails while a sibling still runs (it is not cut off), a commit stores the failed
    run, then the sibling completes: its completion and output are stored too."""
    db = tmp_path / "t.db"
    engine = Engine(
        loads_config(GATE_ONE.format(db=db, mc=2, more=FAILING_SIBLING)), sources=[], persist=True
    )

    async def scenario() -> None:
        gates.BOARD.reset_gates()
        started = gates.BOARD.gate(ra.STARTED)
        async with engine.session():
            engine.submit_nowait(DataReady(symbol="AAA", ts=1.0, price=10.0))
            async with asyncio.timeout(10):
                await started.wait()
            assert engine.coordinator is not None
            assert engine.dispatcher is not None
            coordinator, dispatcher = engine.coordinator, engine.dispatcher
            await _until(lambda: not coordinator.runs)  # failed, its sibling still running
            assert engine.persistence is not None
            assert engine.persistence.writer is not None
            await engine.persistence.writer.flush()
            gates.BOARD.release(ra.GATE)
            await _until(lambda: dispatcher.busy == 0)

    asyncio.run(scenario())
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, state FROM runs").fetchall() == [(1, "failed")]
    assert conn.execute(
        "SELECT step, state, attempts, output FROM steps ORDER BY step"
    ).fetchall() == [("bad", "failed", 1, b"null"), ("g", "completed", 1, b'"done"')]
    conn.close()


def test_a_newer_tick_for_an_adopted_run_is_stored_before_a_crash(tmp_path: Path) -> None:
    """A run adopted at start (stored, nothing done yet) takes a newer tick while it waits: its
    row must say so, or a crash would make the next start act on the old tick."""
    db, crashed = tmp_path / "t.db", tmp_path / "crashed.db"

    def engine(path: Path) -> Engine:
        config = GATE_ONE.format(db=path, mc=1, more="")
        return Engine(loads_config(config), sources=[], persist=True)

    async def seed() -> None:
        gates.BOARD.reset_gates()
        gates.BOARD.release_all()
        async with engine(db).session() as e:
            e.submit_nowait(DataReady(symbol="BBB", ts=1.0, price=1.0))
            e.submit_nowait(DataReady(symbol="AAA", ts=1.0, price=10.0))
            async with asyncio.timeout(10):
                await e.wait_idle()
        conn = sqlite3.connect(db)
        with conn:  # what a crash with both runs waiting in the queue leaves
            conn.execute("DELETE FROM run_blocks")
            for run_id, symbol, price in ((1, "BBB", 1.0), (2, "AAA", 10.0)):
                conn.execute(
                    "INSERT INTO run_rows (id, workflow, symbol, state, priority, tick, tick_ts, "
                    "created_at, steps) VALUES (?, 'wf', ?, 'pending', 0, ?, 1.0, 1.0, '[]')",
                    (run_id, symbol, msgspec.json.encode(Tick(symbol, 1.0, price))),
                )
            conn.execute("UPDATE symbols SET phase='data_ready', status='pending'")
        conn.close()

    async def newer_tick_then_crash() -> None:
        gates.BOARD.reset_gates()
        started = gates.BOARD.gate(ra.STARTED)
        async with engine(db).session() as e:
            async with asyncio.timeout(10):
                await started.wait()  # run 1 holds the lane: run 2 waits in the queue
            assert e.coordinator is not None
            waiting = e.coordinator.pending_run("wf", "AAA")
            assert waiting is not None
            assert waiting.id == 2
            e.submit_nowait(DataReady(symbol="AAA", ts=2.0, price=20.0))  # conflated into it
            assert e.persistence is not None
            assert e.persistence.writer is not None
            await e.persistence.writer.flush()
            _copy(db, crashed)
            gates.BOARD.release(ra.GATE)
            async with asyncio.timeout(10):
                await e.wait_idle()

    asyncio.run(seed())
    asyncio.run(newer_tick_then_crash())
    conn = sqlite3.connect(crashed)
    assert conn.execute("SELECT state, tick_ts FROM run_rows WHERE id = 2").fetchall() == [
        ("pending", 2.0),
    ]
    conn.close()
    gates.BOARD.reset_gates()
    gates.BOARD.release_all()
    gates.BOARD.log.clear()
    asyncio.run(_run_until_idle(engine(crashed)))
    assert [(c[1], c[2]) for c in ra.calls() if c[1] == 2] == [(2, 20.0)]  # once, on the new tick
    assert [c[1] for c in ra.calls() if c[2] >= 10.0] == [2]  # and no extra run for AAA


def test_views_keep_the_v2_nulls(tmp_path: Path) -> None:
    """In `runs`, a completed run's tick is NULL (the journal has it); in `steps`, a step that
    returned None has the output ``null`` and only one that could not be stored has NULL."""
    db = tmp_path / "t.db"
    config = CONFIG.format(db=db).replace("recovery_actions:second", "recovery_actions:nothing")
    asyncio.run(_run_until_idle(
        Engine(loads_config(config), sources=[], persist=True),
        DataReady(symbol="AAA", ts=1.0, price=10.0),
    ))
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT state, tick, tick_ts FROM runs").fetchall() == [
        ("completed", None, 1.0),
    ]
    assert conn.execute("SELECT step, output FROM steps ORDER BY step").fetchall() == [
        ("first", b'{"value":20.0}'), ("second", b"null"),
    ]
    conn.close()
