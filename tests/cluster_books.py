"""What a partition checkpoint's books promise (engine/service/cluster/state.py), checked the
same way by the unit tests (real engines) and the integration tests (real daemons).

A checkpoint carries, per symbol, its position, its cash flow, fees and number of executions
*since ever* (the ledger keeps them exact), but only some of its fills: those of the
partition's runs in flight always, and the partition's newest others, ``RECENT_FILLS`` of them
(handover.py). So ``fill_count == len(fills)`` holds only while the partition has made at most
that many fills; past it the count and the cash stay whole and the fills carried are capped.
A check that wants every fill carried fails on a correct checkpoint as soon as a partition's
symbols together fill more than ``RECENT_FILLS`` orders (the failover test did, on the runs
where few of its events coalesced into one run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from engine.core.orders import Fill, Side
from engine.service.cluster.handover import RECENT_FILLS
from engine.service.cluster.partition import partition_of
from engine.service.cluster.state import PartitionState, check_state

__all__ = ["check_carried_books"]


def check_carried_books(
    state: PartitionState,
    orders: Mapping[str, Fill] | None = None,
    *,
    recent: int = RECENT_FILLS,
) -> None:
    """Assert what ``state``'s books promise: each symbol carries no more fills than it made,
    each once, oldest first, each the registry's (``orders``: client order id -> winning fill)
    when given; a symbol whose every fill is carried has the position, fees and cash flow those
    fills sum to; the partition carries every fill it made while they are at most ``recent``,
    else at least its newest ``recent`` and at most as many more as it has runs in flight.

    The lower bound assumes a broker that remembers at least ``recent`` fills (the paper
    broker's ``order_memory`` is 100,000 by default)."""
    check_state(state)
    where = f"partition {state.partition}"
    made = carried = 0
    for books in state.books:
        symbol = books.symbol
        assert partition_of(symbol, state.partitions) == state.partition, symbol
        fills = books.fills
        ids = [f.client_order_id for f in fills]
        assert len(set(ids)) == len(ids), f"{symbol}: a fill carried twice"
        assert [f.ts for f in fills] == sorted(f.ts for f in fills), f"{symbol}: fills unordered"
        assert len(fills) <= books.fill_count, (
            f"{symbol}: carries {len(fills)} fills of {books.fill_count} made"
        )
        if orders is not None:
            for fill in fills:
                assert orders.get(fill.client_order_id) == fill, (
                    f"{symbol}: {fill.client_order_id} is not the registry's fill"
                )
        if len(fills) == books.fill_count:
            # Every fill is here: the totals the ledger kept must be exactly their sums.
            qty = books.position.qty if books.position is not None else 0.0
            assert qty == pytest.approx(math.fsum(_signed(f, f.qty) for f in fills)), symbol
            assert books.fees == pytest.approx(math.fsum(f.fee for f in fills)), symbol
            assert books.cash_flow == pytest.approx(
                -math.fsum(_signed(f, f.notional) + f.fee for f in fills)
            ), symbol
        made += books.fill_count
        carried += len(fills)
    if made <= recent:
        assert carried == made, f"{where}: carries {carried} of its {made} fills"
    else:
        # Fills of runs in flight are carried besides the newest ``recent`` (pinned).
        assert recent <= carried <= recent + len(state.runs), (
            f"{where}: carries {carried} of its {made} fills, {len(state.runs)} run(s) in "
            f"flight, {recent} newest wanted"
        )


def _signed(fill: Fill, amount: float) -> float:
    return amount if fill.side is Side.BUY else -amount
