"""Ingest into the cluster stream against a real nats-server: every publish carries a
``Nats-Msg-Id`` and a retry is stored once, per-symbol order holds through the pipeline and
through a server restart, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import msgspec
import pytest

from engine.core.events import DataReady, Event
from engine.service.cluster.errors import ClusterError
from engine.service.cluster.publish import ClusterPublisher, PubAck, PublishError, message_id
from engine.service.cluster.stream import ClusterStream
from tests.cluster_data_support import connect, read_stream, run, settings
from tests.nats_support import NatsServer

decode_event = msgspec.json.Decoder(Event).decode
SYMBOLS = [f"S{i:03d}" for i in range(40)] + ["BRK.B", "ES=F", "^GSPC", "EUR/USD"]


def _event(symbol: str, n: int) -> DataReady:
    return DataReady(symbol=symbol, ts=float(n), price=100.0 + n % 7)


async def _stream(server: NatsServer, **overrides: Any) -> Any:
    nc = await connect(server.url)
    await ClusterStream(nc.jetstream(), settings(**overrides)).ensure()
    return nc


def _assert_order_and_once(stored: list[tuple[int, str, str, bytes]]) -> dict[str, list[float]]:
    ids = [msg_id for _, _, msg_id, _ in stored]
    assert len(ids) == len(set(ids)), "an id was stored twice"
    per_symbol: dict[str, list[float]] = {}
    for _, subject, _, data in stored:
        event = decode_event(data)
        assert subject.endswith("." + event.symbol)
        per_symbol.setdefault(event.symbol, []).append(event.ts)
    for symbol, seen in per_symbol.items():
        assert seen == sorted(seen), f"{symbol} out of order"
    return per_symbol


def test_a_retried_id_is_stored_once_with_the_first_sequence(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc = await _stream(nats_server)
        pub = await ClusterPublisher(settings(), node="n1", url=nats_server.url).start()
        first = await pub.publish(_event("AAPL", 1), msg_id=message_id("n1", "replay", 7))
        again = await pub.publish(_event("AAPL", 1), msg_id=message_id("n1", "replay", 7))
        other = await pub.publish(_event("AAPL", 2))
        await pub.close()
        assert first == PubAck("TF", 1, False)
        assert again == PubAck("TF", 1, True)
        assert other.seq == 2
        assert not other.duplicate
        stored = await read_stream(nc.jetstream(), "TF", "tf.part.>")
        assert [(s, i) for s, _, i, _ in stored] == [(1, "n1/replay/7"), (2, stored[1][2])]
        assert stored[1][2].startswith("n1/")  # the derived id: node/boot/counter
        assert pub.duplicates == 1
        await nc.close()

    run(body())


def test_derived_ids_differ_between_publisher_incarnations(nats_server: NatsServer) -> None:
    """A restarted node's counter starts again at 1: without the boot id its first events
    would be dropped as duplicates of the previous incarnation's."""
    async def body() -> None:
        nc = await _stream(nats_server)
        for _ in range(2):
            pub = await ClusterPublisher(settings(), node="n1", url=nats_server.url).start()
            ack = await pub.publish(_event("AAPL", 1))
            assert not ack.duplicate
            await pub.close()
        assert (await nc.jetstream().stream_info("TF")).state.messages == 2
        await nc.close()

    run(body())


def test_order_per_symbol_holds_through_the_pipeline(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc = await _stream(nats_server, partitions=8)
        pub = await ClusterPublisher(settings(partitions=8), node="n1", url=nats_server.url,
                                     window=256).start()
        futures = [pub.publish(_event(SYMBOLS[n % len(SYMBOLS)], n)) for n in range(5000)]
        acks = await asyncio.gather(*futures)
        await pub.close()
        assert sorted(a.seq for a in acks) == list(range(1, 5001))
        stored = await read_stream(nc.jetstream(), "TF", "tf.part.>")
        per_symbol = _assert_order_and_once(stored)
        assert sum(len(v) for v in per_symbol.values()) == 5000
        assert {s.split(".", 3)[2] for _, s, _, _ in stored} == {str(p) for p in range(8)}
        await nc.close()

    run(body())


def _kill_and_start(server: NatsServer) -> None:
    """kill -9 and start again on the same port and store: a crash, not a shutdown."""
    proc = server.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    server.proc = None
    server.start()


def _pause(server: NatsServer) -> None:
    """SIGSTOP past the ack timeout, then SIGCONT: the publisher gives up on the live
    connection and re-sends on a new one while the server still holds the old one's bytes."""
    proc = server.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(2.0)  # the length of the pause is the scenario, not a wait for a condition
    finally:
        os.kill(proc.pid, signal.SIGCONT)


# A server that goes away leaves nats-py's dead connections to the garbage collector, which
# warns about their sockets; what this test asserts is that nothing acked is lost.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["restart", "kill -9", "pause"])
def test_a_server_restart_mid_stream_loses_nothing_acked(
    nats_server: NatsServer, how: str
) -> None:
    bounce = {"restart": nats_server.restart, "kill -9": lambda: _kill_and_start(nats_server),
              "pause": lambda: _pause(nats_server)}[how]

    async def body() -> None:
        nc = await _stream(nats_server)
        await nc.close()
        pub = await ClusterPublisher(settings(), node="n1", url=nats_server.url, window=512,
                                     ack_timeout_s=1.0, deadline_s=30.0).start()
        total = 20_000
        futures: list[asyncio.Future[PubAck]] = []
        bouncing: asyncio.Future[None] | None = None
        for n in range(total):
            futures.append(pub.publish(_event(SYMBOLS[n % len(SYMBOLS)], n)))
            if n % 500 == 499:
                await futures[-500]  # keep the queue near the window: a live stream's pace
            if n == total // 3:
                # in a thread, so publishing goes on while the server is away: publishes are
                # in flight when it goes, and queue up behind them while it is gone
                bouncing = asyncio.ensure_future(asyncio.to_thread(bounce))
        assert bouncing is not None
        await bouncing
        results = await asyncio.gather(*futures, return_exceptions=True)
        await pub.close()
        acked = [(n, r) for n, r in enumerate(results) if isinstance(r, PubAck)]
        failed = [r for r in results if not isinstance(r, PubAck)]
        assert all(isinstance(r, PublishError) for r in failed), failed[:3]
        assert pub.reconnects >= 1
        # Every acknowledged event is in the stream at the sequence its ack names, once.
        nc = await connect(nats_server.url)
        stored = await read_stream(nc.jetstream(), "TF", "tf.part.>")
        by_seq = {seq: decode_event(data) for seq, _, _, data in stored}
        for n, ack in acked:
            assert by_seq[ack.seq] == _event(SYMBOLS[n % len(SYMBOLS)], n)
        per_symbol = _assert_order_and_once(stored)
        assert sum(len(v) for v in per_symbol.values()) == len(stored) >= len(acked)
        # the restart cost no event: nothing stayed unconfirmed within the deadline
        assert len(acked) == total, failed[:2]
        await nc.close()

    run(body(), timeout=120)


def test_an_unreachable_server_fails_publishes_clearly(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc = await _stream(nats_server)
        await nc.close()
        pub = await ClusterPublisher(settings(), node="n1", url=nats_server.url,
                                     ack_timeout_s=0.3, deadline_s=1.0,
                                     reconnect_wait_s=0.05).start()
        assert (await pub.publish(_event("AAPL", 1))).seq == 1
        await asyncio.to_thread(nats_server.stop)
        future = pub.publish(_event("AAPL", 2))
        with pytest.raises(PublishError, match=r"not confirmed within 1\.0 s \(.+\): the "
                           r"event may or may not be in the stream"):
            await future
        await pub.close(grace_s=0.1)

    run(body())


def test_bad_input_is_refused_at_once(nats_server: NatsServer) -> None:
    from nats.js.api import StreamConfig

    async def body() -> None:
        with pytest.raises(ClusterError, match=r"stream 'TF' at .*stream not found"):
            await ClusterPublisher(settings(), node="n1", url=nats_server.url).start()
        nc = await connect(nats_server.url)
        # a stream TF that does not capture the subjects (the start-up check passes)
        await nc.jetstream().add_stream(StreamConfig(name="TF", subjects=["zz.>"]))
        pub = await ClusterPublisher(settings(), node="n1", url=nats_server.url,
                                     deadline_s=0.5, reconnect_wait_s=0.05).start()
        for symbol in ("A..B", ".A", "A."):
            with pytest.raises(PublishError, match=r"empty subject token"):
                pub.publish(_event(symbol, 1))
        # no stream captures the subject: re-sent until the deadline, then failed naming why
        with pytest.raises(PublishError, match=r"not confirmed within 0\.5 s \(no stream "
                           r"answered for tf\.part\.\d+\.AAPL\)"):
            await pub.publish(_event("AAPL", 1))
        # a foreign stream capturing the subjects: the PubAck names it, the publish fails
        await nc.jetstream().add_stream(StreamConfig(name="OTHER", subjects=["tf.part.>"]))
        with pytest.raises(PublishError, match=r"stored in stream 'OTHER', not the cluster "
                           r"stream 'TF': another stream captures its subject"):
            await pub.publish(_event("AAPL", 2))
        await nc.close()
        await pub.close()
        with pytest.raises(PublishError, match=r"not running"):
            pub.publish(_event("AAPL", 1))
        assert pub.in_flight == 0

    run(body())
