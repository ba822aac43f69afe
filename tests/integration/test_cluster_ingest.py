"""ClusterIngest over a real publisher and nats-server: tickets in order, ``wait_accepted``
returns once every ticket up to it is stored, ``wait_capacity`` bounds what is in flight, and
every refusal is a clear error that publishes nothing."""

from __future__ import annotations

import asyncio

import pytest

from engine.core.errors import EventError
from engine.core.events import DataReady
from engine.service.cluster.errors import ClusterError
from engine.service.cluster.ingest import ClusterIngest
from engine.service.cluster.publish import ClusterPublisher, PublishError
from engine.service.cluster.stream import ClusterStream
from tests.cluster_data_support import connect, run, settings
from tests.nats_support import NatsServer


def tick(symbol: str, n: int) -> DataReady:
    return DataReady(symbol=symbol, ts=float(n), price=100.0)


def test_tickets_in_order_and_accepted_means_stored(nats_server: NatsServer) -> None:
    s = settings(nats_url=nats_server.url)

    async def main() -> None:
        nc = await connect(nats_server.url)
        js = nc.jetstream()
        await ClusterStream(js, s).ensure()
        ingest = ClusterIngest(max_in_flight=64)
        with pytest.raises(ClusterError, match="not connected"):
            ingest.submit_nowait(tick("A", 0))
        waiting = asyncio.create_task(ingest.wait_capacity())
        await asyncio.sleep(0)
        assert not waiting.done()  # sources wait until the node has connected
        publisher = await ClusterPublisher(s, node="t").start()
        ingest.start(publisher)
        await asyncio.wait_for(waiting, 5)
        tickets = []
        for n in range(500):
            await ingest.wait_capacity()
            assert ingest.in_flight < 64
            tickets.append(ingest.submit_nowait(tick(f"S{n % 7}", n)))
        assert tickets == list(range(1, 501))
        await ingest.wait_accepted(tickets[-1])
        assert ingest.in_flight == 0
        assert (await js.stream_info(s.stream)).state.messages == 500
        with pytest.raises(EventError, match="subject"):
            ingest.submit_nowait(tick("A..B", 1))
        assert (await js.stream_info(s.stream)).state.messages == 500
        await ingest.wait_accepted(None)  # nothing to wait for
        await publisher.close()
        await nc.close()

    run(main())


def test_a_publish_the_stream_refuses_fails_the_wait_for_it(nats_server: NatsServer) -> None:
    s = settings(nats_url=nats_server.url)

    async def main() -> None:
        nc = await connect(nats_server.url)
        js = nc.jetstream()
        await ClusterStream(js, s).ensure()
        publisher = await ClusterPublisher(s, node="t").start()
        config = (await js.stream_info(s.stream)).config
        config.max_msg_size = 16  # the stream refuses every event from now on
        await js.update_stream(config)
        await nc.close()
        ingest = ClusterIngest()
        ingest.start(publisher)
        ticket = ingest.submit_nowait(tick("A", 1))
        with pytest.raises(PublishError, match="not stored"):
            await ingest.wait_accepted(ticket)
        assert ingest.failures == 1
        ingest.stop()
        with pytest.raises(ClusterError):
            ingest.submit_nowait(tick("A", 2))
        await publisher.close()

    run(main())
