"""A replay file through the whole engine: bad rows are counted and lose nothing around them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.config import load_config
from engine.service.cli import DEFAULT_CONFIG
from engine.service.daemon import Engine
from engine.sources import ReplaySource


async def _replay(path: Path) -> Engine:
    engine = Engine(load_config(DEFAULT_CONFIG), sources=[ReplaySource(path, speed=0)])
    async with engine.session():
        async with asyncio.timeout(10):
            await engine.wait_sources()
            await engine.wait_idle()
    assert engine.sources[0].statistics().state == "finished"
    return engine


def test_bad_rows_are_counted_and_good_rows_around_them_all_run(tmp_path: Path) -> None:
    path = tmp_path / "ticks.jsonl"
    path.write_text(
        '{"symbol":"AAPL","ts":1,"price":10,"priority":0}\n'
        "not json\n"
        '{"symbol":"IBM","ts":2}\n'
        '{"symbol":"IBM","ts":3,"price":11,"priority":3}\n'
        '{"type":"TASK_COMPLETED","symbol":"IBM"}\n'
        '{"symbol":"ORCL","ts":4,"price":12,"priority":2}\n'
    )
    engine = asyncio.run(_replay(path))
    counters = engine.statistics().counters
    assert counters.events_received == {"DATA_READY": 3}
    rejected = {k: v for k, v in counters.events_rejected.items() if v}
    assert rejected == {"malformed_json": 1, "missing_field": 1, "unknown_type": 1}
    assert counters.runs["high_freq_trading"]["completed"] == 1  # AAPL, priority 0
    assert counters.runs["trend_trading"]["completed"] == 2  # IBM and ORCL
    assert counters.runs_in_flight == 0
    ibm = engine.symbols.get("IBM")
    assert ibm is not None
    assert ibm.status.value == "completed"
    assert ibm.priority == 3
