"""The broker's books through storage: written by the engine, read back at start and restored
into the broker the daemon built (through the Broker protocol), refused with the file named
when they are damaged."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine.config import loads_config
from engine.core.errors import StorageError
from engine.core.events import DataReady
from engine.core.strategy import Context, OrderResult, cheap, sends_orders
from engine.service.daemon import Engine

CONFIG = """
[engine]
agents = 2

[workflows.buyer]
priority = 0
max_concurrent = 2

[[workflows.buyer.steps]]
name = "buy"
action = "tests.unit.test_broker_storage:buy"
preemptible = false

[metrics]
enabled = false

[storage]
path = "{db}"
"""


@cheap
@sends_orders
def buy(ctx: Context[object]) -> OrderResult:
    return ctx.submit_order("BUY", 2.0)


def _engine(db: Path) -> Engine:
    return Engine(loads_config(CONFIG.format(db=db)), sources=[], persist=True)


async def _run(engine: Engine, *events: DataReady) -> None:
    async with engine.session():
        for event in events:
            engine.submit_nowait(event)
        async with asyncio.timeout(10):
            await engine.wait_idle()


def test_the_books_come_back_into_the_broker_the_daemon_built(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    first = _engine(db)
    asyncio.run(_run(first, DataReady("AAA", 1.0, 10.0), DataReady("BBB", 1.0, 20.0)))
    before = first.broker.snapshot()
    assert before.fill_count == 2

    second = _engine(db)
    built = second.broker
    assert built.snapshot().fill_count == 0  # fresh from [broker], books empty
    asyncio.run(_run(second))
    assert second.broker is built  # restored in place, not replaced
    after = built.snapshot()
    assert after.positions == before.positions
    assert (after.cash, after.fees_paid, after.orders, after.fill_count) == (
        before.cash, before.fees_paid, before.orders, before.fill_count,
    )
    # The remembered fills keep a retried order idempotent after the restart.
    assert {f.client_order_id for f in after.fills} == {f.client_order_id for f in before.fills}


@pytest.mark.parametrize(
    ("damage", "message"),
    [("UPDATE account SET cash = 1e999", "cannot restore the broker: invalid broker books"),
     ("UPDATE account SET cash = 'lots'", "the stored account, positions or fills are invalid")],
)  # fmt: skip
def test_damaged_books_stop_the_start_naming_the_file(
    tmp_path: Path, damage: str, message: str
) -> None:
    db = tmp_path / "state.db"
    asyncio.run(_run(_engine(db), DataReady("AAA", 1.0, 10.0)))
    with sqlite3.connect(db) as conn:
        conn.execute(damage)
    with pytest.raises(StorageError, match=message) as info:
        asyncio.run(_run(_engine(db)))
    assert str(db) in str(info.value)
