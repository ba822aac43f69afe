"""The order-id registry against a real nats-server: one winner per order id across
connections, losers get the winner's fill, a deleted key is never a free slot, and a
registration whose answer was lost finds out it won."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import pytest

from engine.service.cluster.buckets import ensure_control_buckets
from engine.service.cluster.cluster_metrics import ClusterStats
from engine.service.cluster.errors import ClusterError
from engine.service.cluster.orders import OrderRegistry, Registration, order_key
from tests.cluster_support import connect, run, wait_until
from tests.nats_support import NatsServer


async def _registry(server: NatsServer, name: str, **js_options: Any) -> tuple[Any, Any]:
    nc = await connect(server)
    buckets = await ensure_control_buckets(nc.jetstream(**js_options), stream="T",
                                           lease_ttl_s=2.0, replicas=1)
    return nc, buckets.orders


def test_concurrent_registrants_across_connections_have_exactly_one_winner(
    nats_server: NatsServer,
) -> None:
    async def body() -> list[list[Registration]]:
        conns = [await _registry(nats_server, f"n{i}") for i in range(4)]
        registries = [
            OrderRegistry(kv, registrant=f"node{i}-{j}", stats=ClusterStats())
            for i, (_nc, kv) in enumerate(conns) for j in range(3)
        ]
        outcomes = []
        for order in range(5):
            order_id = f"wf:run-{order}:buy"
            outcomes.append(list(await asyncio.gather(*(
                r.register(order_id, f"fill of {r.registrant} for {order}".encode())
                for r in registries
            ))))
        for nc, _kv in conns:
            await nc.close()
        return outcomes

    for results in run(body):
        winners = [r for r in results if r.won]
        assert len(winners) == 1
        winner = winners[0]
        assert winner.fill.startswith(b"fill of " + winner.attempt.split("/")[0].encode())
        for loser in results:
            assert (loser.fill, loser.attempt, loser.revision) == (
                winner.fill, winner.attempt, winner.revision
            )


def test_a_replay_by_the_same_registrant_gets_the_original_fill(
    nats_server: NatsServer,
) -> None:
    async def body() -> None:
        nc, kv = await _registry(nats_server, "n")
        stats = ClusterStats()
        registry = OrderRegistry(kv, registrant="node-a", stats=stats)
        first = await registry.register("trend:17:buy", b'{"price": 101.5}')
        again = await registry.register("trend:17:buy", b'{"price": 99.0}')
        assert first.won
        assert not again.won
        assert again.fill == b'{"price": 101.5}'
        assert (stats.orders_registered, stats.orders_duplicate) == (1, 1)
        # ids that escape alike stay apart: ':' is =3A, and '=' itself is escaped
        assert order_key("a:b") != order_key("a=3Ab")
        other = await registry.register("a=3Ab", b"x")
        assert other.won
        assert (await registry.register("a:b", b"y")).won
        assert await registry.lookup("never:1:x") is None
        await nc.close()

    run(body)


def test_a_deleted_registry_key_is_an_error_not_a_free_slot(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, kv = await _registry(nats_server, "n")
        registry = OrderRegistry(kv, registrant="node-a")
        assert (await registry.register("wf:1:buy", b"f1")).won
        await kv.delete(order_key("wf:1:buy"))  # what nobody may do
        with pytest.raises(ClusterError, match=r"registry key was deleted .* refusing"):
            await registry.register("wf:1:buy", b"f2")
        # a plain KV create would have let it fill twice: the reason for "last = 0"
        assert await kv.create(order_key("wf:1:buy"), b"plain create") > 0
        await nc.close()

    run(body)


def test_a_registration_whose_answer_was_lost_finds_out_it_won(
    nats_server: NatsServer,
) -> None:
    """The server stalls (SIGSTOP) after the request is sent: the first try times out, the
    server then stores it, the retry fails on "last sequence" and the read shows our own
    attempt -- won, not a duplicate."""
    assert nats_server.proc is not None
    pid = nats_server.proc.pid
    timeouts: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            timeouts.append(record.getMessage())

    handler = Seen(logging.WARNING)
    logger = logging.getLogger("tickflow.cluster.orders")
    logger.addHandler(handler)

    async def body() -> Registration:
        nc, kv = await _registry(nats_server, "n", timeout=1.0)
        registry = OrderRegistry(kv, registrant="node-a", attempts=5)
        os.kill(pid, signal.SIGSTOP)
        try:
            pending = asyncio.ensure_future(registry.register("wf:9:sell", b"the fill"))
            await wait_until(lambda: bool(timeouts), 10, "the first try times out")
        finally:
            os.kill(pid, signal.SIGCONT)
        result = await pending
        assert (await registry.lookup("wf:9:sell")) == result._replace(won=False)
        await nc.close()
        return result

    try:
        result = run(body)
    finally:
        logger.removeHandler(handler)
    assert result.won
    assert result.fill == b"the fill"
    assert "timed out" in timeouts[0]
