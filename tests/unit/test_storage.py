"""The state database: schema, migrations, refusals, and the group-commit writer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.core.errors import StorageError
from engine.core.events import DataReady, Tick
from engine.core.records import JournalLog
from engine.core.symbols import SymbolTable
from engine.storage.db import open_database
from engine.storage.schema import MIGRATIONS, SCHEMA_VERSION
from engine.storage.writer import StorageWriter
from strategies.broker import PaperBroker


def _tables(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        ]
        return {n: [c[1] for c in conn.execute(f"PRAGMA table_info({n})")] for n in names}
    finally:
        conn.close()


async def _open(path: Path) -> None:
    conn = await open_database(path)
    await conn.close()


def test_a_new_file_gets_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "t.db"
    asyncio.run(_open(path))
    tables = _tables(path)
    assert {"symbols", "runs", "steps", "orders", "fills", "positions", "account", "journal"} <= (
        tables.keys()
    )
    assert "preemptions" in tables["steps"]
    assert {"journal_blocks"} <= tables.keys()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()


def test_an_older_schema_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[1])
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute(
        "INSERT INTO runs VALUES (7, 'wf', 'AAPL', 'completed', 'completed', 0, '{}', 1.0, 1.0, "
        "2.0, NULL)"
    )
    conn.execute(
        "INSERT INTO steps VALUES (7, 'a', 'completed', 1, '{\"side\": \"BUY\"}', NULL, 1.0, 2.0)"
    )
    conn.execute("INSERT INTO steps VALUES (7, 'b', 'failed', 2, NULL, 'boom', 2.0, 3.0)")
    conn.execute(
        "INSERT INTO journal VALUES (3, 5.0, 'DATA_READY', 'AAPL', "
        "CAST('{\"symbol\":\"AAPL\",\"ts\":1.5}' AS BLOB))"
    )
    symbols = [
        (4, "AAPL", "data_ready", "pending", 0, 1.5, None,
         b'{"symbol":"AAPL","ts":1.5,"price":101.25}', 2.5),
        (9, "MS:FT", "idle", "failed", 3, None, "wf: boom", None, 3.0),
    ]
    conn.executemany("INSERT INTO symbols VALUES (?,?,?,?,?,?,?,?,?)", symbols)
    conn.commit()
    conn.close()
    asyncio.run(_open(path))
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    assert conn.execute("SELECT id, state FROM runs").fetchall() == [(7, "completed")]
    # v3 keeps a run's steps in its row; the steps view reads them as the v2 table did.
    assert conn.execute(
        "SELECT run_id, step, state, attempts, preemptions, error, output FROM steps "
        "ORDER BY step"
    ).fetchall() == [
        (7, "a", "completed", 1, 0, None, b'{"side":"BUY"}'),
        (7, "b", "failed", 2, 0, "boom", None),
    ]
    assert conn.execute(
        "SELECT seq, received_at, type, symbol, json_extract(payload, '$.ts') FROM journal"
    ).fetchall() == [(3, 5.0, "DATA_READY", "AAPL", 1.5)]
    # v4 keeps a symbol's state as one record; the symbols view reads it as the table was.
    assert conn.execute("SELECT * FROM symbols ORDER BY id").fetchall() == symbols
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {
        "journal_blocks_by_time", "run_rows_by_finish", "run_rows_in_flight", "run_blocks_by_time",
    } <= indexes
    conn.close()


def test_v3_blocks_are_rewritten_in_the_v4_forms_and_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    for version in (1, 2, 3):
        conn.executescript(MIGRATIONS[version])
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    conn.execute(
        "INSERT INTO run_blocks (first_id, last_id, finished_at, runs, records) VALUES "
        "(5, 5, 12.5, 1, '[[5,\"wf\",\"AAPL\",\"completed\",\"completed\",2,null,1.25,"
        "10.5,12.5,null,[[\"a\",0,250000]]]]')"
    )
    conn.execute(
        "INSERT INTO journal_blocks VALUES (8, 8, 9.5, 9.5, "
        "'[[8,9.5,\"DATA_READY\",\"AAPL\",{\"symbol\":\"AAPL\",\"ts\":1.25}]]')"
    )
    conn.commit()
    conn.close()
    asyncio.run(_open(path))
    conn = sqlite3.connect(path)
    assert conn.execute(
        "SELECT id, workflow, symbol, state, outcome, priority, tick, tick_ts, created_at, "
        "finished_at, error FROM runs"
    ).fetchall() == [(5, "wf", "AAPL", "completed", "completed", 2, None, 1.25, 10.5, 12.5, None)]
    assert conn.execute("SELECT run_id, step, state, started_at, finished_at FROM steps"
                        ).fetchall() == [(5, "a", "completed", 10.5, 10.75)]
    assert conn.execute("SELECT seq, received_at, type, symbol, payload FROM journal").fetchall(
    ) == [(8, 9.5, "DATA_READY", "AAPL", b'{"symbol":"AAPL","ts":1.25}')]
    conn.close()


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match=r"future\.db: database schema version 99 is newer"):
        asyncio.run(_open(path))
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a database, it is a text file" * 100, "not a tickflow database or corrupt"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "not a tickflow database or corrupt"),
    ],
)
def test_a_corrupted_file_is_refused_and_left_untouched(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match=match):
        asyncio.run(_open(path))
    assert path.read_bytes() == content


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not a tickflow database"):
        asyncio.run(_open(path))
    assert list(_tables(path)) == ["customers"]


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    """A real, small file system; root only (CI and these machines run as root)."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_a_read_only_file_system_is_a_clear_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=4m") as fs:
        path = fs / "t.db"
        asyncio.run(_open(path))
        before = path.read_bytes()
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        with pytest.raises(StorageError, match=r"t\.db: .*(read-only|readonly)"):
            asyncio.run(_open(path))
        assert path.read_bytes() == before


class _RunLog:
    """The coordinator's side of the run change log, for writer tests without an engine."""

    def __init__(self) -> None:
        self.runs: list[Any] = []

    def track_runs(self, wake: Any) -> None:
        pass

    def take_changed_runs(self) -> list[Any]:
        runs, self.runs = self.runs, []
        return runs

    @property
    def changed_runs(self) -> int:
        return len(self.runs)

    def routes(self, priority: int) -> tuple[Any, ...]:
        return ()

    record_offset = 0.0
    last_run_id = 0

    def take_finished(self) -> None:
        return None


async def _held_until_a_commit(writer: StorageWriter, waits: int | None = None) -> None:
    """Intake waits for capacity now, and is let go by the next commit."""
    waiter = asyncio.create_task(writer.wait_capacity())
    await asyncio.sleep(0)  # one loop turn: the waiter is now parked on the condition
    assert not waiter.done()
    if waits is not None:
        assert writer.statistics().backpressure_waits == waits
    await writer.commit()
    async with asyncio.timeout(5):
        await waiter


def _writer(conn: object, broker: PaperBroker, **kw: object) -> StorageWriter:
    return StorageWriter(conn, path="t.db", broker=broker, wall=lambda: 1000.0, next_seq=1,
                         **kw)  # type: ignore[arg-type]


async def _watching(path: Path, **kw: object) -> tuple[StorageWriter, SymbolTable]:
    """A writer on a new database at ``path``, writing what a fresh symbol table changes."""
    writer = _writer(await open_database(path), PaperBroker(), **kw)
    symbols = SymbolTable()
    writer.watch(symbols)
    return writer, symbols


@needs_root
def test_a_full_disk_stops_the_writer_with_a_clear_error(tmp_path: Path) -> None:
    async def fill_it(path: Path) -> tuple[int, int]:
        conn = await open_database(path)
        writer = _writer(conn, PaperBroker())
        payload = b'"' + b"x" * 4000 + b'"'  # journal payloads are the events' JSON
        committed = 0

        async def write_until_it_fails() -> None:
            nonlocal committed
            for i in range(100_000):
                writer.journal("DATA_READY", f"S{i}", payload, 1.0)
                if i % 50 == 49:
                    await writer.commit()
                    committed = writer.statistics().committed_seq

        with pytest.raises(StorageError, match=r"commit failed.*full"):
            await write_until_it_fails()
        await conn.close()
        return committed, writer.last_seq

    with tmpfs(tmp_path / "small", "size=1m") as fs:
        path = fs / "t.db"
        committed, last = asyncio.run(fill_it(path))
        assert 0 < committed < last
        # What was committed before the disk filled up is all still there, nothing else.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        assert conn.execute("SELECT MAX(seq), COUNT(*) FROM journal").fetchone() == (
            committed, committed,
        )
        conn.close()


def test_journal_records_commit_in_groups_and_wake_durability_waiters(tmp_path: Path) -> None:
    async def scenario() -> None:
        conn = await open_database(tmp_path / "t.db")
        writer = _writer(conn, PaperBroker(), commit_interval_s=0.001)
        task = asyncio.create_task(writer.run_forever())
        try:
            seqs = [writer.journal("DATA_READY", "AAPL", b"{}", float(i)) for i in range(500)]
            assert seqs == list(range(1, 501))
            async with asyncio.timeout(10):
                await writer.wait_committed(seqs[-1])
            stats = writer.statistics()
            assert stats.committed_seq == 500
            assert stats.records == 500
            assert stats.commits < 500  # grouped, not one commit per record
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await writer.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM journal").fetchone() == (
        500, 1, 500,
    )
    conn.close()


def test_symbol_changes_between_commits_are_written_once_as_the_latest_state(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        writer, symbols = await _watching(tmp_path / "t.db")
        state = symbols.register("AAPL", 0)
        for i in range(100):
            symbols.mark_data_ready(state, Tick("AAPL", float(i), 100.0 + i))
        assert writer.backlog == 1
        await writer.commit()
        await writer.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    row = conn.execute("SELECT name, phase, status, last_tick FROM symbols").fetchone()
    assert row[:3] == ("AAPL", "data_ready", "pending")
    assert b'"price":199.0' in row[3]
    conn.close()


def test_symbol_records_round_trip_through_the_view_whatever_the_name(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer, symbols = await _watching(tmp_path / "t.db")
        # The batch is keyed "id:name": a name with colons, quotes or digits stays whole.
        for name in ("12:34", 'A"B', "BRK.B", "7"):
            symbols.register(name, 2)
        failed = symbols.get("7")
        assert failed is not None
        symbols.mark_failed(failed, "wf: boom", 5.0)
        await writer.commit()
        await writer.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute(
        "SELECT id, name, phase, status, priority, last_processed, last_error, last_tick "
        "FROM symbols ORDER BY id"
    ).fetchall() == [
        (1, "12:34", "idle", "completed", 2, None, None, None),
        (2, 'A"B', "idle", "completed", 2, None, None, None),
        (3, "BRK.B", "idle", "completed", 2, None, None, None),
        (4, "7", "idle", "failed", 2, 5.0, "wf: boom", None),
    ]
    # Operators' SQL still writes through the view.
    conn.execute("UPDATE symbols SET phase = 'data_ready', status = 'pending' WHERE id = 3")
    conn.execute("DELETE FROM symbols WHERE id = 1")
    assert conn.execute("SELECT name, phase, status, priority FROM symbols ORDER BY id").fetchall(
    ) == [('A"B', "idle", "completed", 2), ("BRK.B", "data_ready", "pending", 2),
          ("7", "idle", "failed", 2)]
    conn.close()


def test_the_journal_log_encodes_as_it_accepts_and_keeps_nothing_of_a_failed_record() -> None:
    signals: list[int] = []
    log = JournalLog(41, signals.append)
    log.offset = 1000.0
    assert log.add("DATA_READY", DataReady(symbol="AAPL", ts=1.0, price=2.0), 5.0) == 42
    assert signals == [1]  # the first record wakes the writer
    log.signal_at = 3
    bad = DataReady(symbol="MSFT", ts=1.0, price=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Encoding objects of type object is unsupported"):
        log.add("DATA_READY", bad, 6.0)  # half-encoded when it failed: the half is dropped
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        log.add_raw("DATA_READY", "\ud800", b"{}", 7.0)  # refused when offered, not at commit
    assert log.add_raw("DATA_READY", "MSFT", b'{"x":1}', 7.0) == 43  # no seq was used up
    assert signals == [1]
    log.note()  # a change of another kind counts toward the same signal
    assert signals == [1, 3]
    count, first, last, first_at, last_at, events = log.take()
    assert (count, first, last, first_at, last_at) == (2, 42, 43, 1005.0, 7.0)
    assert msgspec.json.decode(events) == [  # times in integer microseconds
        [42, 1_005_000_000,
         {"type": "DATA_READY", "symbol": "AAPL", "ts": 1.0, "price": 2.0, "volume": 0.0,
          "bid": None, "ask": None, "priority": None}],
        [43, 7_000_000, {"x": 1}, "DATA_READY", "MSFT"],  # as given: type and symbol beside
    ]
    assert (log.changes, log.signal_at, log.take()[0], log.take()[5]) == (0, 1, 0, "[]")
    assert log.add_raw("DATA_READY", "X", b"{}", 8.0) == 44  # seqs go on after a take


def test_backpressure_blocks_intake_until_the_writer_catches_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        conn = await open_database(tmp_path / "t.db")
        writer = _writer(conn, PaperBroker(), backlog_max=10, batch_max=1000,
                         commit_interval_s=0.001)
        for i in range(10):
            writer.journal("DATA_READY", "X", b"{}", float(i))
        await _held_until_a_commit(writer, waits=1)
        await writer.close()

    asyncio.run(scenario())


def test_a_stop_requested_during_a_commit_is_not_missed(tmp_path: Path) -> None:
    async def scenario() -> None:
        conn = await open_database(tmp_path / "t.db")
        writer = _writer(conn, PaperBroker(), commit_interval_s=0.001)
        task = asyncio.create_task(writer.run_forever())
        writer.journal("DATA_READY", "X", b"{}", 1.0)
        await asyncio.sleep(0)  # the writer is now grouping or committing
        writer.request_stop()
        writer.journal("DATA_READY", "X", b"{}", 2.0)
        async with asyncio.timeout(10):
            await task  # returns: it saw the stop and committed everything
        assert writer.statistics().committed_seq == 2
        await writer.close()

    asyncio.run(scenario())


def test_retention_prunes_only_what_is_older_than_the_horizon(tmp_path: Path) -> None:
    now = 2_000_000_000.0

    async def scenario() -> int:
        conn = await open_database(tmp_path / "t.db")
        writer = StorageWriter(conn, path="t.db", broker=PaperBroker(), wall=lambda: now,
                               next_seq=1, retention_s=3600.0)
        for age in (7200.0, 3601.0, 3599.0, 10.0):  # a journal block per commit
            writer.journal("DATA_READY", "X", b"{}", now - age)
            await writer.commit()
        pruned = await writer.prune()
        await writer.close()
        return pruned

    assert asyncio.run(scenario()) == 2
    conn = sqlite3.connect(tmp_path / "t.db")
    assert [r[0] for r in conn.execute("SELECT received_at FROM journal ORDER BY seq")] == [
        now - 3599.0, now - 10.0,
    ]
    conn.close()


def test_a_commit_cancelled_mid_transaction_finishes_and_close_still_works(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        conn = await open_database(tmp_path / "t.db")
        writer = _writer(conn, PaperBroker())
        writer.journal("DATA_READY", "X", b"{}", 1.0)
        commit = asyncio.create_task(writer.commit())
        for _ in range(3):
            await asyncio.sleep(0)  # let it get into the transaction (thread round trips)
        commit.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await commit
        writer.journal("DATA_READY", "X", b"{}", 2.0)
        await writer.close()  # must not start a transaction inside the cancelled one

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert [r[0] for r in conn.execute("SELECT seq FROM journal ORDER BY seq")] == [1, 2]
    conn.close()


def test_nothing_is_committed_after_a_failed_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        conn = await open_database(tmp_path / "t.db")
        writer = _writer(conn, PaperBroker())
        writer.journal("DATA_READY", "X", b"{}", 1.0)
        await writer.commit()
        writer._log.seq = 0  # the next record reuses seq 1: its commit fails (UNIQUE)
        writer.journal("DATA_READY", "X", b"{}", 2.0)
        with pytest.raises(StorageError, match="commit failed, stopping: UNIQUE"):
            await writer.commit()
        writer.journal("DATA_READY", "X", b"{}", 3.0)  # seq 2, would be valid on its own
        with pytest.raises(StorageError, match="an earlier commit failed"):
            await writer.commit()
        await writer.close()  # closes without committing on top of the hole

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT seq, received_at FROM journal").fetchall() == [(1, 1.0)]
    conn.close()


STEPS_CONFIG = """
[workflows.wf]
priority = 1
max_concurrent = 1
[[workflows.wf.steps]]
name = "a"
action = "tests.unit.run_actions:quick"
[[workflows.wf.steps]]
name = "b"
action = "tests.unit.run_actions:quick"
depends_on = ["a"]
"""


def _first_step_done(run: Any, output: object = None) -> None:
    """``run``'s first step ran once, at engine time 0, and completed with ``output``."""
    from engine.core.fsm import StepState

    step = run.steps[0]
    step.advance(StepState.RUNNING)
    step.started_at = 0.0
    step.attempts = 1
    step.output = output
    step.advance(StepState.COMPLETED)
    run.completed = 1


def test_a_step_output_that_cannot_be_encoded_is_stored_as_missing_the_rest_intact(
    tmp_path: Path,
) -> None:
    """Records are encoded together: one output msgspec cannot encode must not cost the
    others -- it is stored as missing (recovery re-runs that run), the rest as is."""
    from engine.config import compile_workflows, loads_config
    from engine.core.runs import Run
    from engine.core.symbols import SymbolState

    wf = compile_workflows(loads_config(STEPS_CONFIG))["wf"]

    async def scenario() -> None:
        conn = await open_database(tmp_path / "t.db")
        writer = _writer(conn, PaperBroker())
        log = _RunLog()
        writer.watch(SymbolTable(), log)  # type: ignore[arg-type]
        good = Run(1, wf, SymbolState(1, "AAPL", 1), Tick("AAPL", 1.0, 100.0), 1, 0.0)
        bad = Run(2, wf, SymbolState(2, "MSFT", 1), Tick("MSFT", 2.0, 50.0), 1, 0.0)
        outputs = {1: {"signal": "BUY", "z": 1.5}, 2: object()}
        for run in (good, bad):
            _first_step_done(run, outputs[run.id])
            log.runs.append(run)
        await writer.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    rows = conn.execute("SELECT run_id, step, state, output FROM steps ORDER BY run_id").fetchall()
    assert rows == [
        (1, "a", "completed", b'{"signal":"BUY","z":1.5}'),
        (2, "a", "completed", None),
    ]
    ticks = conn.execute("SELECT id, tick, tick_ts FROM runs ORDER BY id").fetchall()
    assert ticks == [
        (1, b'{"symbol":"AAPL","ts":1.0,"price":100.0,"volume":0.0,"bid":null,"ask":null}', 1.0),
        (2, b'{"symbol":"MSFT","ts":2.0,"price":50.0,"volume":0.0,"bid":null,"ask":null}', 2.0),
    ]


def test_backpressure_holds_when_batches_are_larger_than_the_backlog_bound(
    tmp_path: Path,
) -> None:
    """``batch_max`` > ``backlog_max`` is a valid config: once the change count has passed the
    bound without the backlog doing so (one symbol changed over and over counts once), the
    backlog must still be looked at again before the batch is full."""

    async def scenario() -> None:
        writer, symbols = await _watching(tmp_path / "t.db", backlog_max=1000, batch_max=5000)
        state = symbols.register("AAPL", 0)
        for i in range(2000):  # one symbol changed 2000 times: logged once, backlog 1
            symbols.mark_data_ready(state, Tick("AAPL", float(i), 100.0))
        for i in range(1100):  # now the backlog really passes the bound
            writer.journal("DATA_READY", "AAPL", b"{}", float(i))
        assert writer.backlog > 1000
        await _held_until_a_commit(writer)
        await writer.close()

    asyncio.run(scenario())


def test_a_nul_in_an_error_is_stored_spelled_out_not_cut(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer, symbols = await _watching(tmp_path / "t.db")
        state = symbols.register("AAPL", 0)
        symbols.mark_failed(state, "wf: ValueError: bad '\x00\x01' input", 1.0)
        await writer.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT last_error FROM symbols").fetchone() == (
        "wf: ValueError: bad '\\x00\x01' input",
    )


def test_an_error_text_that_cannot_be_encoded_is_stored_spelled_out(tmp_path: Path) -> None:
    """A strategy's exception text may hold a lone surrogate: the commit must not fail on it
    (before, it broke the writer with a transaction left open)."""

    async def scenario() -> None:
        writer, symbols = await _watching(tmp_path / "t.db")
        state = symbols.register("AAPL", 0)
        symbols.mark_failed(state, "wf: ValueError: \udc80 bad", 1.0)
        await writer.commit()
        symbols.mark_completed(state, 2.0)
        await writer.close()  # a second commit on the same connection: nothing left open

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT status, last_error FROM symbols").fetchone() == (
        "completed",
        None,
    )


def test_the_symbol_change_log_holds_each_symbol_once_and_only_when_tracked() -> None:
    symbols = SymbolTable()
    state = symbols.register("AAPL", 1)
    for i in range(1000):  # storage off: nothing is kept
        symbols.mark_data_ready(state, Tick("AAPL", float(i), 100.0))
    assert symbols.changed == 0
    assert symbols.take_changed() == []
    wakes: list[int] = []
    symbols.track(lambda: wakes.append(1))
    other = symbols.register("MSFT", 1)
    for i in range(1000):
        symbols.mark_data_ready(state, Tick("AAPL", float(i), 100.0))
        symbols.mark_completed(other, float(i))
    assert (symbols.changed, len(wakes)) == (2, 1)  # woken once, at the first change
    assert symbols.take_changed() == [other, state]
    assert symbols.take_changed() == []
    symbols.mark_processing(state)
    assert (symbols.take_changed(), len(wakes)) == ([state], 2)


def test_with_storage_off_the_engine_keeps_no_change_log(tmp_path: Path) -> None:
    from engine.config import loads_config
    from engine.core.events import DataReady
    from engine.service.daemon import Engine

    async def scenario() -> Engine:
        engine = Engine(loads_config(STEPS_CONFIG), sources=[])
        async with engine.session():
            for i in range(200):
                engine.submit_nowait(DataReady(symbol=f"S{i % 7}", ts=float(i), price=1.0))
            async with asyncio.timeout(10):
                await engine.wait_idle()
            assert engine.coordinator is not None
            assert engine.coordinator.changed_runs == 0
            assert engine.coordinator.take_changed_runs() == []
            assert engine.symbols.changed == 0
        return engine

    asyncio.run(scenario())


def test_a_completed_run_with_an_output_that_cannot_be_encoded_costs_only_that_output() -> None:
    """Completed runs are encoded into their commit's block as they end: an output msgspec
    cannot encode is stored as missing, its run and the block intact."""
    from engine.config import compile_workflows, loads_config
    from engine.core.fsm import RunState, StepState
    from engine.core.records import FinishedRuns
    from engine.core.runs import Run
    from engine.core.symbols import SymbolState

    wf = compile_workflows(loads_config(STEPS_CONFIG))["wf"]
    finished = FinishedRuns()
    for run_id, output in ((1, {"z": 1.5}), (2, object()), (3, None)):
        run = Run(run_id, wf, SymbolState(run_id, "AAPL", 1), Tick("AAPL", 1.0, 2.0), 1, 10.0)
        for step in run.steps:
            step.advance(StepState.RUNNING)
            step.started_at, step.attempts = 10.0, 1
            step.output = output
            step.advance(StepState.COMPLETED)
            step.finished_at = 10.5
        run.advance(RunState.RUNNING)
        run.advance(RunState.COMPLETED)
        run.finished_at, run.outcome = 11.0, "completed"
        finished.add(run, 1000.0)
    records = msgspec.json.decode(finished.block())
    assert [r[0] for r in records] == [1, 2, 3]
    assert (finished.count, finished.first_id, finished.last_id) == (3, 1, 3)
    assert records[0][7][0] == ["a", 0, 500000, "completed", 1, 0, None, {"z": 1.5}, True, None]
    assert records[1][7][0] == ["a", 0, 500000, "completed", 1, 0, None, None, False, None]
    assert records[2][7][0] == ["a", 0, 500000]  # no output: the short form
    # [id, workflow, symbol, priority, tick_ts, created_us, finished_us, steps]: wall time in
    # integer microseconds; outcome and error are left out when "completed" and none.
    assert records[2][:7] == [3, "wf", "AAPL", 1, 1.0, 1_010_000_000, 1_011_000_000]
    assert len(records[2]) == 8


def test_a_commit_is_one_statement_and_with_orders_one_transaction(tmp_path: Path) -> None:
    """The common commit is the one ``INSERT INTO commits`` (its trigger writes every table,
    as SQLite's own transaction: the SQLite thread takes the GIL twice, not per table); a
    commit carrying orders adds their statements inside BEGIN IMMEDIATE .. COMMIT."""
    from types import SimpleNamespace

    broker = PaperBroker()

    async def scenario() -> list[list[str]]:
        writer = _writer(await open_database(tmp_path / "t.db"), broker)
        symbols = SymbolTable()
        writer.watch(symbols)
        seen: list[str] = []
        await writer.conn.set_trace_callback(seen.append)
        commits = []
        state = symbols.register("AAPL", 0)
        symbols.mark_data_ready(state, Tick("AAPL", 1.0, 100.0))
        writer.journal("DATA_READY", "AAPL", b"{}", 1.0)
        await writer.commit()
        commits.append(seen[:])
        seen.clear()
        fill = broker.submit("c-1", "AAPL", "BUY", 2.0, 100.0, 1.0)
        writer.journal("DATA_READY", "AAPL", b"{}", 2.0)
        writer.order(SimpleNamespace(status="filled", client_order_id="c-1", symbol="AAPL",
                                     side="BUY", qty=2.0, fill=fill), 7)
        await writer.commit()
        commits.append(seen[:])
        await writer.conn.set_trace_callback(None)
        await writer.close()
        return commits

    single, with_orders = asyncio.run(scenario())
    # A trigger's statements are traced under the text of the statement that fired them.
    assert {s.split(" (")[0] for s in single} == {"INSERT INTO commits VALUES"}
    assert [s.split(" (")[0].split(" VALUES")[0] for s in dict.fromkeys(with_orders)] == [
        "BEGIN IMMEDIATE", "INSERT INTO commits", "INSERT OR IGNORE INTO orders",
        "INSERT OR IGNORE INTO fills", "INSERT INTO positions", "INSERT INTO account", "COMMIT",
    ]
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT seq FROM journal ORDER BY seq").fetchall() == [(1,), (2,)]
    assert conn.execute("SELECT client_order_id, run_id FROM orders").fetchall() == [("c-1", 7)]
    assert conn.execute("SELECT symbol, qty FROM positions").fetchall() == [("AAPL", 2.0)]
    assert conn.execute("SELECT value FROM meta WHERE key='max_seq'").fetchone() == ("2",)
    assert conn.execute("SELECT COUNT(*) FROM commits").fetchone() == (0,)  # only written
    conn.close()


def test_a_run_row_with_an_infinite_tick_ts_is_stored_as_infinite(tmp_path: Path) -> None:
    """Run rows travel as JSON, where msgspec writes +inf as null. JSON intake refuses such a
    ts, but a source built in Python may hand one over: the trigger puts the infinity back
    (bound as a parameter, it used to be stored as is) rather than fail the NOT NULL column,
    and with it the commit and every later one."""
    from engine.config import compile_workflows, loads_config
    from engine.core.runs import Run
    from engine.core.symbols import SymbolState

    wf = compile_workflows(loads_config(STEPS_CONFIG))["wf"]
    tick = Tick("AAPL", float("inf"), 100.0)

    async def scenario() -> None:
        writer = _writer(await open_database(tmp_path / "t.db"), PaperBroker())
        log = _RunLog()
        writer.watch(SymbolTable(), log)  # type: ignore[arg-type]
        run = Run(1, wf, SymbolState(1, "AAPL", 1), tick, 1, 0.0)
        _first_step_done(run)
        log.runs.append(run)
        await writer.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT id, state, tick_ts FROM runs").fetchall() == [
        (1, "pending", float("inf")),
    ]
    conn.close()


def test_under_load_a_batch_gathers_as_long_as_the_last_commit_took_within_bounds() -> None:
    """At light load a batch gathers for ``commit_interval``; once commits take longer, for as
    long as the last one took (fewer, larger commits), never longer than ``gather_max``."""
    writer = _writer(None, PaperBroker(), commit_interval_s=0.002, gather_max_s=0.02)
    writer._loaded = True  # changes arrived while the last commit was written
    for last, gather in ((0.0, 0.002), (0.001, 0.002), (0.007, 0.007), (0.5, 0.02)):
        writer.last_commit_s = last
        assert writer.gather_s() == gather
    writer._loaded = False  # nothing did: light load, however slow that commit was
    assert writer.gather_s() == 0.002
    # A bound below the interval is the interval: the adaptive gather is then off.
    fixed = _writer(None, PaperBroker(), commit_interval_s=0.005, gather_max_s=0.001)
    fixed.last_commit_s = 0.5
    fixed._loaded = True
    assert fixed.gather_s() == 0.005


def test_at_light_load_a_slow_last_commit_does_not_delay_the_next(tmp_path: Path) -> None:
    """The longer gather is for commits written back to back: an event arriving while nothing
    is being written is committed after ``commit_interval``, however long the last commit took
    (a slow disk, ``synchronous = "full"``)."""

    async def scenario() -> None:
        writer = _writer(await open_database(tmp_path / "t.db"), PaperBroker(),
                         commit_interval_s=0.001, gather_max_s=3600.0)
        task = asyncio.create_task(writer.run_forever())
        try:
            seq = writer.journal("DATA_READY", "AAPL", b"{}", 1.0)
            async with asyncio.timeout(10):
                await writer.wait_committed(seq)
            writer.last_commit_s = 3600.0  # as if that commit had taken an hour
            assert writer.gather_s() == 0.001  # nothing arrived while it was written
            seq = writer.journal("DATA_READY", "AAPL", b"{}", 2.0)
            async with asyncio.timeout(10):
                await writer.wait_committed(seq)
        finally:
            writer.request_stop()
            async with asyncio.timeout(10):
                await task
            await writer.close()

    asyncio.run(scenario())


def test_the_gather_bound_comes_from_the_config(tmp_path: Path) -> None:
    from engine.config import loads_config
    from engine.service.daemon import Engine

    toml = STEPS_CONFIG + (
        '[source]\nkind = "none"\n[storage]\n'
        f'path = "{tmp_path / "t.db"}"\ncommit_interval_ms = 3.0\ncommit_gather_max_ms = 7.0\n'
    )

    async def scenario() -> tuple[float, float]:
        engine = Engine(loads_config(toml), sources=[], persist=True)
        async with engine.session():
            assert engine.persistence is not None
            assert engine.persistence.writer is not None
            writer = engine.persistence.writer
            return writer.commit_interval_s, writer.gather_max_s

    assert asyncio.run(scenario()) == (0.003, 0.007)


def test_a_failure_late_in_the_commit_statement_keeps_nothing_of_it(tmp_path: Path) -> None:
    """The trigger writes the journal block and the symbols first; a run row that breaks a
    constraint after them rolls the whole statement back (SQLite's own transaction), and the
    writer stops: nothing after it may be written on top of the hole."""
    from engine.storage.rows import Rows

    async def scenario() -> None:
        conn = await open_database(tmp_path / "t.db")
        writer = _writer(conn, PaperBroker())
        rows = Rows(1.0)
        params: list[Any] = [None] * 16
        params[0:5] = (1, 1, 1.0, 1.0, "[[1,1000000,{}]]")
        params[5] = '{"1:AAPL":["idle","completed",1,null,null,null]}'
        params[6] = 1.0
        # A run row without its workflow: NOT NULL fails after the journal and symbols.
        params[13] = '[[9,null,"AAPL","running",null,1,{},1.0,1.0,null,null,[]]]'
        params[15] = 1
        rows.commit = tuple(params)
        with pytest.raises(StorageError, match="commit failed, stopping: NOT NULL"):
            await writer._transaction(rows, [], 1.0)
        assert not conn.in_transaction
        with pytest.raises(StorageError, match="an earlier commit failed"):
            await writer.commit()
        await conn.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT COUNT(*) FROM journal_blocks").fetchone() == (0,)
    assert conn.execute("SELECT COUNT(*) FROM symbol_rows").fetchone() == (0,)
    assert conn.execute("SELECT value FROM meta WHERE key='max_seq'").fetchone() is None
    conn.close()


def test_a_v4_file_with_data_is_migrated_and_commits_through_the_view(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    for version in range(1, 5):
        conn.executescript(MIGRATIONS[version])
    conn.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    conn.execute("INSERT INTO meta VALUES ('max_seq', '41')")
    conn.execute(
        "INSERT INTO run_rows (id, workflow, symbol, state, outcome, priority, tick, tick_ts, "
        "created_at, finished_at, error, steps) VALUES "
        "(7, 'wf', 'AAPL', 'running', NULL, 1, '{}', 1.0, 1.0, NULL, NULL, '[]')"
    )
    conn.commit()
    conn.close()

    async def scenario() -> None:
        writer = StorageWriter(await open_database(path), path=str(path), broker=PaperBroker(),
                               wall=lambda: 1000.0, next_seq=42)
        writer.journal("DATA_READY", "AAPL", b"{}", 2.0)
        await writer.commit()
        await writer.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    assert conn.execute("SELECT value FROM meta WHERE key='max_seq'").fetchone() == ("42",)
    assert conn.execute("SELECT id, state FROM runs").fetchall() == [(7, "running")]
    assert conn.execute("SELECT seq FROM journal").fetchall() == [(42,)]
    conn.close()


def test_a_step_output_nested_deeper_than_msgspec_goes_is_stored_as_missing(
    tmp_path: Path,
) -> None:
    """msgspec gives up on deep nesting with RecursionError: like any output it cannot encode,
    the output is stored as missing (recovery re-runs that run), not the commit lost."""
    from engine.core.records import steps_json

    deep: Any = 0
    for _ in range(5000):
        deep = [deep]
    steps = (("s", 0, 5, "completed", 1, 0, None, deep, True),)
    assert msgspec.json.decode(steps_json(steps)) == [
        ["s", 0, 5, "completed", 1, 0, None, None, False],
    ]
