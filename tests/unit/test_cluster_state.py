"""A partition's state moving between real engines: snapshot, JSON, evict, restore.

Every engine here is a real :class:`~engine.service.daemon.Engine` session (SQLite off) on a
fake clock, with the paper broker and risk manager its config builds; runs wait on gates the
test opens, and every wait is bounded in loop turns or by a timeout that only a bug reaches.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import msgspec
import pytest

from engine.core.clock import FakeClock
from engine.core.events import DataReady
from engine.core.runs import Run
from engine.core.strategy import Context, OrderResult, StepContext, cheap, sends_orders
from engine.core.symbols import SymbolTable
from engine.service.cluster.books import BookLedger, SymbolBooks, merged
from engine.service.cluster.errors import CheckpointError
from engine.service.cluster.handover import (
    evict,
    evict_many,
    restore,
    restore_many,
    snapshot,
    snapshot_many,
    track,
)
from engine.service.cluster.partition import partition_of
from engine.service.cluster.state import FORMAT, PartitionState, decode_state, encode_state
from engine.service.daemon import Engine
from strategies.broker import PaperBroker
from tests.unit import run_actions
from tests.unit.engine_harness import make_engine, run_async, settle, wait_for
from tests.unit.gates import BOARD

P = 4
SYMBOLS = [f"S{i}" for i in range(12)]  # three per partition of 4
INITIAL_CASH = 1_000_000.0


def part(symbol: str) -> int:
    return partition_of(symbol, P)


def of(*partitions: int) -> list[str]:
    return [s for s in SYMBOLS if part(s) in partitions]


# -- step actions ------------------------------------------------------------------------------


@cheap
@sends_orders
def trade(ctx: Context[object]) -> OrderResult:
    """Buys, and sells on every third price: positions grow, shrink and realise P&L."""
    side = "SELL" if int(ctx.tick.price) % 3 == 0 else "BUY"
    return ctx.submit_order(side, 2.0)


@sends_orders
async def gated_trade(ctx: StepContext) -> OrderResult:
    """An order step that is running (not yet sent) until the test opens gate ``order``."""
    await BOARD.gate("order").wait()
    return ctx.submit_order("BUY", 2.0)


@sends_orders
async def trade_then_wait(ctx: StepContext) -> OrderResult:
    """An order step still running after its fill, until the test opens gate ``after``."""
    result = ctx.submit_order("BUY", 2.0)
    await BOARD.gate("after").wait()
    return result


@cheap
def opaque(ctx: StepContext) -> object:
    """An output JSON cannot carry."""
    BOARD.log.append(("opaque", ctx.run_id))
    return object()


TRADE_CONFIG = """
[engine]
agents = 2
[metrics]
enabled = false
[workflows.trader]
priority = 0
max_concurrent = 4
[[workflows.trader.steps]]
name = "trade"
action = "tests.unit.test_cluster_state:trade"
preemptible = false
"""

def order_config(action: str) -> str:
    return TRADE_CONFIG.replace("tests.unit.test_cluster_state:trade", action)


GATED_ORDER_CONFIG = order_config("tests.unit.test_cluster_state:gated_trade")


def two_steps(first: str) -> str:
    """Workflow ``wf``: ``a`` (``first``) then ``b``, gated on ``wf.b.<symbol>``."""
    return f"""
    [engine]
    agents = 2
    [metrics]
    enabled = false
    [workflows.wf]
    priority = 0
    max_concurrent = 4
    [[workflows.wf.steps]]
    name = "a"
    action = "{first}"
    [[workflows.wf.steps]]
    name = "b"
    action = "tests.unit.run_actions:gated"
    depends_on = ["a"]
    """


# -- helpers -----------------------------------------------------------------------------------


def tick(symbol: str, round_: int) -> DataReady:
    return DataReady(symbol, 1_700_000_000.0 + round_, 100.0 + 7 * round_ + SYMBOLS.index(symbol))


async def idle(engine: Engine) -> None:
    async with asyncio.timeout(5):  # a bound for a bug, not a wait for time to pass
        await engine.wait_idle()


async def trade_rounds(engine: Engine, symbols: list[str], rounds: int = 6) -> None:
    """One tick per symbol per round, each round run to the end: the same fills per symbol
    whichever other symbols the engine also trades."""
    for r in range(rounds):
        for symbol in symbols:
            engine.submit_nowait(tick(symbol, r))
        await idle(engine)


def rows(engine: Engine, symbols: list[str] | None = None) -> dict[str, Any]:
    """Symbol rows by name, without the node's own id."""
    return {
        s.name: msgspec.structs.replace(s.row(), id=0)
        for s in engine.symbols if symbols is None or s.name in symbols
    }


def fills_by_id(engine: Engine) -> dict[str, Any]:
    return {f.client_order_id: f for f in engine.broker.snapshot().fills}


def executions(engine: Engine) -> Counter[tuple[Any, ...]]:
    """The fills without their client order ids (run ids differ from node to node)."""
    return Counter(
        (f.symbol, f.side, f.qty, f.price, f.fee) for f in engine.broker.snapshot().fills
    )


def moved(state: PartitionState) -> PartitionState:
    """Through the checkpoint's wire form, as the data plane stores it."""
    return decode_state(encode_state(state))


# -- round trips -------------------------------------------------------------------------------


def test_a_state_round_trips_through_json() -> None:
    async def main() -> None:
        engine, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        async with engine.session():
            engine.submit_nowait(DataReady("S2", 1.0, 10.0, priority=3))
            await wait_for(lambda: run_actions.blocked() == ["wf.b.S2"], "b to start")
            state = snapshot(engine, 0, P, 41)
            assert moved(state) == state
            assert (state.format, state.partition, state.seq) == (FORMAT, 0, 41)
            [run] = state.runs
            assert (run.workflow, run.symbol) == ("wf", "S2")
            assert [s.name for s in run.completed] == ["a"]
            assert run.completed[0].output == {"step": "a", "symbol": "S2", "run_id": run.id,
                                               "price": 10.0}
            [row] = state.symbols
            assert (row.name, row.priority, row.status) == ("S2", 3, "processing")
            run_actions.release_all()
            await idle(engine)

    run_async(main)


def test_snapshot_evict_restore_gives_back_the_same_books_and_rows() -> None:
    async def main() -> None:
        engine, _ = make_engine(TRADE_CONFIG)
        async with engine.session():
            await trade_rounds(engine, SYMBOLS)
            books, symbol_rows, fills = engine.broker.snapshot(), rows(engine), fills_by_id(engine)
            state = snapshot(engine, 1, P, 7)
            assert {b.symbol for b in state.books} == set(of(1))

            report = await evict(engine, 1, P)
            assert (report.symbols, report.positions, report.cancelled) == (3, 3, 0)
            assert rows(engine).keys() == set(SYMBOLS) - set(of(1))
            assert not any(part(f.symbol) == 1 for f in engine.broker.snapshot().fills)
            assert all(engine.market.latest(s) is None for s in of(1))
            partial = engine.broker.snapshot()
            assert partial.cash == pytest.approx(books.cash - sum(b.cash_flow for b in state.books))

            restored = restore(engine, moved(state))
            assert (restored.symbols, restored.positions, restored.resumed) == (3, 3, 0)
            after = engine.broker.snapshot()
            assert after.positions == books.positions
            assert after.last_prices == books.last_prices
            assert fills_by_id(engine) == fills
            assert (after.orders, after.fill_count, after.duplicates) == (
                books.orders, books.fill_count, books.duplicates)
            assert after.cash == pytest.approx(books.cash, abs=1e-6)
            assert after.fees_paid == pytest.approx(books.fees_paid, abs=1e-9)
            assert rows(engine) == symbol_rows
            assert snapshot(engine, 1, P, 7) == state  # nothing lost or gained on the way

    run_async(main)


def test_halves_on_two_engines_moved_to_one_equal_one_engine_that_saw_everything() -> None:
    async def main() -> None:
        ref, _ = make_engine(TRADE_CONFIG)
        a, _ = make_engine(TRADE_CONFIG)
        b, _ = make_engine(TRADE_CONFIG)
        c, _ = make_engine(TRADE_CONFIG)
        async with ref.session(), a.session(), b.session(), c.session():
            assert b.coordinator is not None
            b.coordinator.set_next_run_id(10_000)  # in a cluster, ids derive from the stream
            await trade_rounds(ref, SYMBOLS)
            await trade_rounds(a, of(0, 1))
            await trade_rounds(b, of(2, 3))
            # Engine a's two partitions in one go, engine b's one by one.
            states = snapshot_many(a, {0: 100, 1: 101}, P)
            assert (await evict_many(a, [0, 1], P)).symbols == len(of(0, 1))
            assert restore_many(c, [moved(s) for s in states.values()]).symbols == 6
            for p in (2, 3):
                state = moved(snapshot(b, p, P, 100 + p))
                await evict(b, p, P)
                restore(c, state)

            want, got = ref.broker.snapshot(), c.broker.snapshot()
            assert want.fill_count == got.fill_count == 6 * len(SYMBOLS)
            assert executions(c) == executions(ref)
            for w, g in zip(want.positions, got.positions, strict=True):
                assert (g.symbol, g.qty) == (w.symbol, w.qty)
                assert g.avg_cost == pytest.approx(w.avg_cost)
                assert g.realized_pnl == pytest.approx(w.realized_pnl)
            assert got.cash == pytest.approx(want.cash, abs=1e-6)
            assert got.fees_paid == pytest.approx(want.fees_paid, abs=1e-9)
            assert got.last_prices == want.last_prices
            assert rows(c) == rows(ref)
            # Positions are the sum of their fills, and the cash adds up to one account.
            for position in got.positions:
                signed = sum(
                    f.qty if f.side == "BUY" else -f.qty for f in got.fills
                    if f.symbol == position.symbol
                )
                assert position.qty == pytest.approx(signed)
            flows = sum(
                -(f.notional if f.side == "BUY" else -f.notional) - f.fee for f in got.fills
            )
            assert got.cash == pytest.approx(INITIAL_CASH + flows, abs=1e-6)
            # The nodes that gave their partitions up hold nothing of them any more.
            for gone in (a, b):
                left = gone.broker.snapshot()
                assert (left.positions, left.fills, left.fill_count) == ((), (), 0)
                assert left.cash == pytest.approx(INITIAL_CASH, abs=1e-6)
                assert len(gone.symbols) == 0

    run_async(main)


# -- runs in flight ------------------------------------------------------------------------------


def test_a_run_in_flight_resumes_on_the_new_owner_without_redoing_its_completed_step() -> None:
    async def main() -> None:
        old, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        new, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        async with old.session(), new.session():
            old.submit_nowait(DataReady("S3", 1.0, 55.0))
            await wait_for(lambda: run_actions.blocked() == ["wf.b.S3"], "b to start")
            state = moved(snapshot(old, 3, P, 9))
            [run] = state.runs
            report = await evict(old, 3, P)
            assert report.cancelled == 1
            assert not old.coordinator.runs  # type: ignore[union-attr]

            restored = restore(new, state)
            assert (restored.resumed, restored.restarted) == (1, 0)
            run_actions.release("wf.b.S3")
            await idle(new)
            assert len(run_actions.calls("a")) == 1  # on the old owner only
            first_b, second_b = run_actions.calls("b")
            assert second_b.run_id == first_b.run_id == run.id
            assert second_b.inputs == first_b.inputs == {
                "a": {"step": "a", "symbol": "S3", "run_id": run.id, "price": 55.0}}
            row = new.symbols.get("S3")
            assert row is not None
            assert row.status.value == "completed"

    run_async(main)


def test_a_run_whose_output_cannot_be_carried_starts_over_under_the_same_id() -> None:
    async def main() -> None:
        old, _ = make_engine(two_steps("tests.unit.test_cluster_state:opaque"))
        new, _ = make_engine(two_steps("tests.unit.test_cluster_state:opaque"))
        async with old.session(), new.session():
            old.submit_nowait(DataReady("S3", 1.0, 55.0))
            await wait_for(lambda: run_actions.blocked() == ["wf.b.S3"], "b to start")
            state = moved(snapshot(old, 3, P, 9))
            [step] = state.runs[0].completed
            assert (step.name, step.stored, step.output) == ("a", False, None)
            await evict(old, 3, P)
            assert restore(new, state).restarted == 1
            run_actions.release("wf.b.S3")
            await idle(new)
            run_id = state.runs[0].id
            assert BOARD.log.count(("opaque", run_id)) == 2  # once per owner

    run_async(main)


def test_a_replayed_order_is_not_filled_twice_after_a_restore() -> None:
    async def main() -> None:
        old, _ = make_engine(TRADE_CONFIG)
        new, _ = make_engine(TRADE_CONFIG)
        async with old.session(), new.session():
            old.submit_nowait(tick("S2", 0))
            await idle(old)
            [fill] = old.broker.snapshot().fills
            position = old.broker.position("S2")
            state = moved(snapshot(old, 0, P, 1))
            await evict(old, 0, P)
            restore(new, state)
            # The new owner replays the same event: same run id, so same client order id.
            new.submit_nowait(tick("S2", 0))
            await idle(new)
            books = new.broker.snapshot()
            assert books.fills == (fill,)
            assert (books.fill_count, books.duplicates) == (1, 1)
            assert new.broker.position("S2") == position
            assert new.orders == {f"{fill.side}:filled": 1}

    run_async(main)


def test_evict_lets_a_running_order_finish_and_leaves_the_other_partitions_alone() -> None:
    async def main() -> None:
        engine, _ = make_engine(GATED_ORDER_CONFIG)
        async with engine.session():
            engine.submit_nowait(tick("S2", 0))  # partition 0
            engine.submit_nowait(tick("S1", 0))  # partition 1
            coordinator = engine.coordinator
            assert coordinator is not None
            await wait_for(lambda: len(coordinator.runs) == 2 and not engine.queue, "orders out")
            eviction = asyncio.create_task(evict(engine, 0, P))
            await settle()
            assert not eviction.done()  # an order is never cut half-way
            BOARD.release("order")
            report = await asyncio.wait_for(eviction, 5)
            assert (report.cancelled, report.fills) == (1, 1)
            await idle(engine)
            books = engine.broker.snapshot()
            assert [f.symbol for f in books.fills] == ["S1"]
            assert [p.symbol for p in books.positions] == ["S1"]
            assert engine.symbols.get("S2") is None
            row = engine.symbols.get("S1")
            assert row is not None
            assert row.status.value == "completed"
            fill = books.fills[0]
            assert books.cash == pytest.approx(INITIAL_CASH - fill.notional - fill.fee)

    run_async(main)


# -- refusals ------------------------------------------------------------------------------------


def test_restore_refuses_a_partition_the_engine_still_holds_and_applies_nothing() -> None:
    async def main() -> None:
        engine, _ = make_engine(TRADE_CONFIG)
        async with engine.session():
            await trade_rounds(engine, of(0), rounds=2)
            state = snapshot(engine, 0, P, 3)
            before, symbol_rows = engine.broker.snapshot(), rows(engine)
            with pytest.raises(CheckpointError, match="evict it first"):
                restore(engine, state)
            assert engine.broker.snapshot() == before
            assert rows(engine) == symbol_rows

    run_async(main)


def test_restore_refuses_run_ids_already_in_flight_for_other_symbols() -> None:
    async def main() -> None:
        old, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        new, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        async with old.session(), new.session():
            old.submit_nowait(DataReady("S2", 1.0, 10.0))
            new.submit_nowait(DataReady("S1", 1.0, 10.0))  # the same run id, 1
            await wait_for(lambda: len(run_actions.blocked()) == 2, "both b to start")
            state = moved(snapshot(old, 0, P, 1))
            with pytest.raises(CheckpointError, match=r"run id\(s\) 1 are in flight"):
                restore(new, state)
            assert new.symbols.get("S2") is None
            run_actions.release_all()
            await idle(old)
            await idle(new)

    run_async(main)


def _wire(**changes: Any) -> bytes:
    state = PartitionState(
        partition=0, partitions=P, seq=5, taken_at=1.0, symbols=(), books=(), runs=(),
    )
    data = msgspec.json.decode(encode_state(state))
    data.update(changes)
    return msgspec.json.encode(data)


_ROW = {"name": "S2", "priority": 0, "phase": "idle", "status": "completed",
        "last_processed": None, "last_error": None, "last_tick": None}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not a partition checkpoint"),
        (b"[1, 2]", "not a partition checkpoint"),
        (_wire(format="1"), "no integer format"),
        (_wire(format=99), "format 99 is not one this release reads.*newer tickflow"),
        (_wire(format=0), "format 0 is not one this release reads"),
        (_wire(seq="five"), "checkpoint is damaged.*seq"),
        (_wire(extra=1), "damaged.*extra"),
        (_wire(partition=4), "partition 4 is not in 0..3"),
        (_wire(seq=-1), "seq -1 is negative"),
        (_wire(symbols=[{**_ROW, "name": "S1"}]), "S1 belong.* to other partitions"),
        (_wire(symbols=[_ROW, _ROW]), "symbol S2 more than once"),
        (_wire(symbols=[{**_ROW, "phase": "dancing"}]), "'dancing'.* do not exist"),
        (_wire(books=[{"symbol": "S2", "position": None, "last_price": "INF", "cash_flow": 0.0,
                       "fees": 0.0, "fill_count": 0, "fills": []}]).replace(b'"INF"', b"1e999"),
         "damaged.*out of range"),
        (_wire(books=[{"symbol": "S2", "position": None, "last_price": 1.0, "cash_flow": 0.0,
                       "fees": 0.0, "fill_count": -1, "fills": []}]), "books of S2 are not"),
    ],
)  # fmt: skip
def test_a_checkpoint_it_cannot_read_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        decode_state(data)


def test_the_wire_form_decodes_to_the_state_it_came_from() -> None:
    assert decode_state(_wire()) == decode_state(_wire().decode())
    assert decode_state(_wire()).seq == 5


# -- the books' pure functions and the ledger ------------------------------------------------------


def _books_of(broker: PaperBroker, symbol: str) -> SymbolBooks:
    return SymbolBooks(symbol=symbol, position=broker.position(symbol), last_price=10.0,
                       cash_flow=-20.0, fees=0.0, fill_count=1, fills=broker.snapshot().fills)


def test_merged_refuses_symbols_or_client_order_ids_already_held() -> None:
    held = PaperBroker(fee_bps=0.0, slippage_bps=0.0)
    held.submit("wf:1:s", "S2", "BUY", 2.0, 10.0, 1.0)
    other = PaperBroker(fee_bps=0.0, slippage_bps=0.0)
    other.submit("wf:1:s", "S6", "BUY", 2.0, 10.0, 1.0)
    with pytest.raises(CheckpointError, match="already holds books of S2"):
        merged(held.snapshot(), [_books_of(held, "S2")])
    with pytest.raises(CheckpointError, match="wf:1:s already filled here"):
        merged(held.snapshot(), [_books_of(other, "S6")])


def test_the_ledger_keeps_the_cash_of_fills_the_broker_forgot() -> None:
    broker = PaperBroker(order_memory=2)
    ledger = BookLedger(broker.snapshot())
    for i in range(6):
        broker.submit(f"wf:{i}:s", SYMBOLS[i % 3], "BUY" if i % 2 else "SELL", 1.0, 50.0 + i, 1.0)
        ledger.catch_up(broker.snapshot())  # a checkpoint after every fill
    assert len(broker.snapshot().fills) == 2
    assert sum(f.count for f in ledger.flows.values()) == 6
    assert sum(f.cash for f in ledger.flows.values()) == pytest.approx(broker.cash - 1_000_000.0)
    assert sum(f.fees for f in ledger.flows.values()) == pytest.approx(broker.fees_paid)


def test_the_ledger_refuses_fills_forgotten_before_it_saw_them() -> None:
    broker = PaperBroker(order_memory=2)
    for i in range(3):
        broker.submit(f"wf:{i}:s", "S2", "BUY", 1.0, 50.0, 1.0)
    with pytest.raises(CheckpointError, match="made 3 fills and remembers 2"):
        BookLedger(broker.snapshot())
    fresh = PaperBroker(order_memory=2)
    ledger = BookLedger(fresh.snapshot())
    for i in range(3):
        fresh.submit(f"wf:{i}:s", "S2", "BUY", 1.0, 50.0, 1.0)
    with pytest.raises(CheckpointError, match=r"made 3 fills since .* remembers 2 fills in all"):
        ledger.catch_up(fresh.snapshot())


def test_books_stay_one_account_when_the_broker_forgets_between_checkpoints() -> None:
    async def main() -> None:
        config = make_engine(TRADE_CONFIG)[0].config
        engine = Engine(config, clock=FakeClock(), sources=[], broker=PaperBroker(order_memory=13))
        async with engine.session():
            track(engine)  # before the broker forgets any fill
            for r in range(4):
                await trade_rounds(engine, SYMBOLS, rounds=1)
                states = [snapshot(engine, p, P, r) for p in range(P)]
            books = engine.broker.snapshot()
            assert len(books.fills) == 13 < books.fill_count == 4 * len(SYMBOLS)
            total = sum(b.cash_flow for s in states for b in s.books)
            assert INITIAL_CASH + total == pytest.approx(books.cash, abs=1e-6)
            for p in range(P):
                await evict(engine, p, P)
            left = engine.broker.snapshot()
            assert left.cash == pytest.approx(INITIAL_CASH, abs=1e-6)
            assert (left.fill_count, left.orders, left.positions) == (0, 0, ())

    run_async(main)


# -- the symbol table's part -----------------------------------------------------------------------


def test_discarding_a_row_refuses_live_runs_and_leaves_the_change_log() -> None:
    table = SymbolTable()
    table.track(None)
    kept, gone = table.register("S1", 0), table.register("S2", 0)
    busy = table.register("S3", 0)
    busy.runs.add(object())
    with pytest.raises(ValueError, match=r"S3.*live run"):
        table.discard("S3")
    assert table.discard("S2") is gone
    assert table.discard("S2") is None
    assert "S2" not in table
    assert table.take_changed() == [kept, busy]  # storage is not asked to write S2 any more


def test_a_checkpoint_carries_the_newest_fills_and_always_those_of_runs_in_flight() -> None:
    async def main() -> None:
        engine, _ = make_engine(order_config("tests.unit.test_cluster_state:trade_then_wait"))
        async with engine.session():
            BOARD.release("after")
            for r in range(3):
                engine.submit_nowait(tick("S2", r))
                await idle(engine)
            older = [f.client_order_id for f in engine.broker.snapshot().fills]
            assert len(older) == 3
            state = snapshot(engine, 0, P, 3, recent_fills=2)
            assert [f.client_order_id for f in state.books[0].fills] == older[1:]
            assert state.books[0].fill_count == 3  # the count and cash stay whole
            BOARD.reset_gates()
            engine.submit_nowait(tick("S2", 3))  # fills, then waits: its run is in flight
            await wait_for(lambda: len(engine.broker.snapshot().fills) == 4, "the fill")
            [run] = snapshot(engine, 0, P, 4).runs
            pinned = snapshot(engine, 0, P, 4, recent_fills=0).books[0].fills
            assert [f.client_order_id for f in pinned] == [f"trader:{run.id}:trade"]
            BOARD.release("after")
            await idle(engine)

    run_async(main)


def test_restoring_several_checkpoints_refuses_a_mixed_or_repeated_set() -> None:
    async def main() -> None:
        engine, _ = make_engine(TRADE_CONFIG)
        async with engine.session():
            zero = PartitionState(partition=0, partitions=P, seq=1, taken_at=1.0, symbols=(),
                                  books=(), runs=())
            other = msgspec.structs.replace(zero, partitions=8)
            with pytest.raises(CheckpointError, match=r"different partition counts \[4, 8\]"):
                restore_many(engine, [zero, other])
            with pytest.raises(CheckpointError, match="a partition is given twice"):
                restore_many(engine, [zero, zero])
            assert restore_many(engine, []).symbols == 0

    run_async(main)


def test_the_ledger_refuses_books_changed_behind_its_back() -> None:
    broker = PaperBroker()
    broker.submit("wf:1:s", "S2", "BUY", 1.0, 50.0, 1.0)
    ledger = BookLedger(broker.snapshot())
    other = PaperBroker()
    other.submit("wf:7:s", "S2", "BUY", 1.0, 50.0, 1.0)
    other.submit("wf:8:s", "S2", "BUY", 1.0, 50.0, 1.0)
    broker.restore(other.snapshot())  # two fills, none of them the one read before
    with pytest.raises(CheckpointError, match="changed other than by new fills"):
        ledger.catch_up(broker.snapshot())


def test_a_new_owner_carries_on_from_the_checkpoint_as_if_nothing_moved() -> None:
    """The old owner checkpoints with runs triggered but not run, goes on past the checkpoint
    and dies; the new owner restores the checkpoint and replays what came after it: its books
    are those of one engine that saw every event once."""

    async def main() -> None:
        ref, _ = make_engine(TRADE_CONFIG)
        old, _ = make_engine(TRADE_CONFIG)
        new, _ = make_engine(TRADE_CONFIG)
        mine = of(2)
        async with ref.session(), old.session(), new.session():
            assert new.coordinator is not None
            new.coordinator.set_next_run_id(10_000)
            await trade_rounds(ref, mine, rounds=6)
            await trade_rounds(old, mine, rounds=3)
            for symbol in mine:  # round 3 accepted: its runs are triggered, none has run
                old.submit_nowait(tick(symbol, 3))
            state = moved(snapshot(old, 2, P, seq=4 * len(mine)))
            assert len(state.runs) == len(mine)
            assert all(not r.completed for r in state.runs)
            await idle(old)
            old.submit_nowait(tick(mine[0], 4))  # applied after the checkpoint, then it dies
            await idle(old)

            assert restore(new, state).restarted == len(mine)
            await idle(new)  # round 3's runs, adopted
            for r in (4, 5):  # the replay from seq + 1
                for symbol in mine:
                    new.submit_nowait(tick(symbol, r))
                await idle(new)
            want, got = ref.broker.snapshot(), new.broker.snapshot()
            assert executions(new) == executions(ref)
            assert got.positions == want.positions
            assert got.cash == pytest.approx(want.cash, abs=1e-6)
            assert got.fill_count == want.fill_count == 6 * len(mine)
            assert rows(new) == rows(ref)

    run_async(main)


def test_an_engine_done_with_is_not_kept_alive_by_its_ledger() -> None:
    import gc
    import weakref

    async def main() -> weakref.ref[Engine]:
        engine, _ = make_engine(TRADE_CONFIG)
        async with engine.session():
            track(engine)
        return weakref.ref(engine)

    ref = asyncio.run(main())
    gc.collect()
    assert ref() is None


def test_a_newer_tick_waiting_behind_a_run_in_flight_gets_its_run_on_the_new_owner() -> None:
    async def main() -> None:
        old, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        new, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        async with old.session(), new.session():
            old.submit_nowait(DataReady("S3", 1.0, 55.0))
            await wait_for(lambda: run_actions.blocked() == ["wf.b.S3"], "b to start")
            old.submit_nowait(DataReady("S3", 2.0, 56.0))  # waits as the run's follow-up
            state = moved(snapshot(old, 3, P, 2))
            assert [r.tick.price for r in state.runs] == [55.0]
            assert state.runs[0].follow_up is not None
            assert state.runs[0].follow_up.price == 56.0
            assert state.symbols[0].last_tick is not None
            assert state.symbols[0].last_tick.price == 56.0
            await evict(old, 3, P)
            restore(new, state)
            run_actions.release("wf.b.S3")
            await wait_for(lambda: len(run_actions.calls("b")) == 3, "the follow-up's b")
            await idle(new)
            assert [c.tick.price for c in run_actions.calls("b")] == [55.0, 55.0, 56.0]
            assert new.market.latest("S3") == state.symbols[0].last_tick

    run_async(main)


def test_a_run_without_a_follow_up_gets_none_on_the_new_owner() -> None:
    """A workflow that skips while busy leaves the newer tick without a run: the new owner
    does not invent one from the symbol's last tick."""

    async def main() -> None:
        config = two_steps("tests.unit.run_actions:quick").replace(
            "max_concurrent = 4", "max_concurrent = 4\n    on_busy = \"skip\"")
        old, _ = make_engine(config)
        new, _ = make_engine(config)
        async with old.session(), new.session():
            old.submit_nowait(DataReady("S3", 1.0, 55.0))
            await wait_for(lambda: run_actions.blocked() == ["wf.b.S3"], "b to start")
            old.submit_nowait(DataReady("S3", 2.0, 56.0))  # skipped: the run is busy
            state = moved(snapshot(old, 3, P, 2))
            assert state.runs[0].follow_up is None
            await evict(old, 3, P)
            restore(new, state)
            run_actions.release("wf.b.S3")
            await idle(new)
            assert [c.tick.price for c in run_actions.calls("b")] == [55.0, 55.0]

    run_async(main)


@pytest.mark.skipif(
    not hasattr(Run, "follow_up_seq"),
    reason="run ids derived from events arrive with Coordinator.id_for (main, 2162335)",
)
def test_a_follow_up_keeps_the_run_id_its_event_derives() -> None:
    """With run ids derived from stream sequences (Coordinator.id_for), the follow-up started
    on the new owner has the id the old owner would have given it."""

    async def main() -> None:
        old, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        new, _ = make_engine(two_steps("tests.unit.run_actions:quick"))
        async with old.session(), new.session():
            for engine in (old, new):
                coordinator = engine.coordinator
                coordinator.id_for = lambda wf, seq: 1_000_000 + seq  # type: ignore[union-attr]
            coordinator = old.coordinator
            coordinator.event_seq = 7  # type: ignore[union-attr]
            old.submit_nowait(DataReady("S3", 1.0, 55.0))
            await wait_for(lambda: run_actions.blocked() == ["wf.b.S3"], "b to start")
            coordinator.event_seq = 8  # type: ignore[union-attr]
            old.submit_nowait(DataReady("S3", 2.0, 56.0))
            coordinator.event_seq = None  # type: ignore[union-attr]
            state = moved(snapshot(old, 3, P, 8))
            assert [(r.id, r.follow_up_seq) for r in state.runs] == [(1_000_007, 8)]
            await evict(old, 3, P)
            restore(new, state)
            run_actions.release("wf.b.S3")
            await wait_for(lambda: len(run_actions.calls("b")) == 3, "the follow-up's b")
            await idle(new)
            assert [c.run_id for c in run_actions.calls("b")] == [1_000_007, 1_000_007, 1_000_008]

    run_async(main)


def test_snapshot_refuses_arguments_out_of_range() -> None:
    async def main() -> None:
        engine, _ = make_engine(TRADE_CONFIG)
        async with engine.session():
            for partition, seq, recent in ((4, 0, 1), (-1, 0, 1), (0, -1, 1), (0, 0, -1)):
                with pytest.raises(ValueError, match=r"must be >= 0|is not in 0\.\.3"):
                    snapshot(engine, partition, P, seq, recent_fills=recent)
            with pytest.raises(ValueError, match=r"is not in 0\.\.3"):
                await evict(engine, 4, P)

    run_async(main)


def test_nothing_works_on_an_engine_that_is_not_running() -> None:
    engine, _ = make_engine(TRADE_CONFIG)
    with pytest.raises(RuntimeError, match="not running"):
        snapshot(engine, 0, P, 0)
