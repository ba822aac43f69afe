"""The storage writer's statistics as Prometheus metrics: an engine with storage on a real
SQLite file, scraped from its own registry and parsed back as Prometheus would read it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine.config import loads_config
from engine.core.errors import StorageError
from engine.service.daemon import Engine
from engine.storage.writer import BATCH_BOUNDS

from .engine_harness import data_ready, make_engine, run_async
from .test_metrics import BUCKET_BOUNDS, scrape, series, value

CONFIG = """
[engine]
agents = 1

[workflows.wf]
priority = 0
max_concurrent = 2
[[workflows.wf.steps]]
name = "only"
action = "tests.unit.run_actions:quick"

[metrics]
enabled = false

[storage]
path = "{db}"
backlog_max = 777
"""

COUNTERS = (
    "tickflow_storage_commits_total",
    "tickflow_storage_records_total",
    "tickflow_storage_backpressure_waits_total",
    "tickflow_storage_pruned_total",
)
GAUGES = ("tickflow_storage_backlog", "tickflow_storage_backlog_max")


def _engine(db: Path) -> Engine:
    return Engine(loads_config(CONFIG.format(db=db)), sources=[], persist=True)


def test_with_storage_off_every_storage_series_exists_at_zero() -> None:
    engine, _ = make_engine(
        "[workflows.wf]\npriority = 0\nmax_concurrent = 1\n[[workflows.wf.steps]]\n"
        'name = "only"\naction = "tests.unit.run_actions:quick"\n'
    )

    async def main() -> None:
        async with engine.session():
            samples = scrape(engine)
        for name in (*COUNTERS, *GAUGES):
            assert value(samples, name) == 0, name
        assert series(samples, "tickflow_storage_errors_total") == {
            (("operation", "commit"),): 0, (("operation", "prune"),): 0
        }
        buckets = series(samples, "tickflow_storage_commit_duration_seconds_bucket")
        assert len(buckets) == len(BUCKET_BOUNDS) + 1
        assert set(buckets.values()) == {0}
        batch = series(samples, "tickflow_storage_commit_records_bucket")
        assert len(batch) == len(BATCH_BOUNDS) + 1
        assert set(batch.values()) == {0}

    run_async(main)


def test_commits_records_and_batch_sizes_are_the_writers_own(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "t.db")

    async def main() -> None:
        async with engine.session():
            for i in range(5):
                engine.submit_nowait(data_ready(f"S{i}"))
            async with asyncio.timeout(10):
                await engine.wait_idle()
            assert engine.persistence is not None
            writer = engine.persistence.writer
            assert writer is not None
            await writer.flush()
            stats = writer.statistics()
            samples = scrape(engine)
        assert stats.commits >= 1
        assert stats.records >= 5 + 5 + 5  # a journal record, a symbol and a run each
        assert value(samples, "tickflow_storage_commits_total") == stats.commits
        assert value(samples, "tickflow_storage_records_total") == stats.records
        assert value(samples, "tickflow_storage_backlog") == 0
        assert value(samples, "tickflow_storage_backlog_max") == 777
        assert value(samples, "tickflow_storage_backpressure_waits_total") == 0
        # Every commit timed; every commit's records in one bucket, their sum the records.
        name = "tickflow_storage_commit_duration_seconds"
        assert value(samples, f"{name}_count") == stats.commits
        assert value(samples, f"{name}_bucket", le="+Inf") == stats.commits
        assert 0 < value(samples, f"{name}_sum") < 10
        name = "tickflow_storage_commit_records"
        assert value(samples, f"{name}_count") == stats.commits
        assert value(samples, f"{name}_sum") == stats.records
        cumulative = [value(samples, f"{name}_bucket", le=repr(float(b))) for b in BATCH_BOUNDS]
        assert cumulative == sorted(cumulative)
        assert cumulative[-1] == stats.commits  # no commit of 100 000 records here
        assert value(samples, f"{name}_bucket", le="1.0") < stats.commits  # none of one alone

    run_async(main)


def test_a_failed_commit_is_counted(tmp_path: Path) -> None:
    """A commit that SQLite refuses stops the writer (and the engine, with a clear error); the
    scrape after it says so."""
    db = tmp_path / "t.db"
    engine = _engine(db)

    async def refused() -> None:
        async with engine.session():
            # Another process refuses every new journal block from now on.
            conn = sqlite3.connect(db)
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON journal_blocks "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
            conn.commit()
            conn.close()
            engine.submit_nowait(data_ready("AAPL"))
            async with asyncio.timeout(10):
                await engine.wait_idle()
                assert engine.persistence is not None
                writer = engine.persistence.writer
                assert writer is not None
                await writer.flush()

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup) as caught:
            await refused()
        assert caught.group_contains(StorageError, match="commit failed, stopping: refused")
        samples = scrape(engine)
        assert value(samples, "tickflow_storage_errors_total", operation="commit") == 1
        assert value(samples, "tickflow_storage_errors_total", operation="prune") == 0
        assert value(samples, "tickflow_storage_commits_total") == 0

    run_async(main)
