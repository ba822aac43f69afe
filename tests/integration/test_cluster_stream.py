"""The cluster stream and the partitions' durables against a real nats-server: created, read
back, and an existing one that does not match is a clear error, never silently changed."""

from __future__ import annotations

from typing import Any

import pytest

from engine.service.cluster.errors import ClusterConfigError, ClusterError
from engine.service.cluster.stream import ClusterStream, durable_name
from tests.cluster_data_support import connect, run, settings
from tests.nats_support import NatsServer


async def _with_js(server: NatsServer, body: Any) -> Any:
    nc = await connect(server.url)
    try:
        return await body(nc.jetstream())
    finally:
        await nc.close()


def test_stream_is_created_as_asked_and_a_second_ensure_accepts_it(
    nats_server: NatsServer,
) -> None:
    async def body(js: Any) -> None:
        stream = ClusterStream(js, settings(partitions=8))
        info = await stream.ensure()
        assert info.config.subjects == ["tf.part.>"]
        assert info.config.duplicate_window == pytest.approx(120.0)
        assert info.config.storage == "file"
        assert "partitions=8" in info.config.description
        again = await ClusterStream(js, settings(partitions=8)).ensure()
        assert again.config.name == "TF"

    run(_with_js(nats_server, body))


def test_an_existing_stream_with_another_partition_count_is_refused(
    nats_server: NatsServer,
) -> None:
    async def body(js: Any) -> None:
        await ClusterStream(js, settings(partitions=8)).ensure()
        with pytest.raises(ClusterConfigError, match=r"holds 8 partitions, \[cluster\] "
                           r"partitions is 16: the count is fixed"):
            await ClusterStream(js, settings(partitions=16)).ensure()

    run(_with_js(nats_server, body))


def test_an_existing_stream_with_other_subjects_is_refused(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        await ClusterStream(js, settings(prefix="tf")).ensure()
        with pytest.raises(ClusterConfigError, match=r"existing stream 'TF' differs .*"
                           r"subjects: asked \['other\.part\.>'\], the server has \['tf"):
            await ClusterStream(js, settings(prefix="other")).ensure()

    run(_with_js(nats_server, body))


def test_a_foreign_stream_of_the_same_name_is_refused(nats_server: NatsServer) -> None:
    from nats.js.api import StreamConfig

    async def body(js: Any) -> None:
        await js.add_stream(StreamConfig(name="TF", subjects=["tf.part.>"]))
        with pytest.raises(ClusterConfigError, match=r"was not made by tickflow"):
            await ClusterStream(js, settings()).ensure()

    run(_with_js(nats_server, body))


def test_partition_durables_filter_on_their_partition(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        stream = ClusterStream(js, settings(partitions=4, max_ack_pending=777))
        await stream.ensure()
        for p in range(4):
            info = await stream.ensure_consumer(p)
            assert info.name == durable_name("TF", p) == f"TF_p{p}"
            assert info.config.filter_subject == f"tf.part.{p}.>"
            assert info.config.ack_policy == "all"
            assert info.config.max_ack_pending == 777
        # idempotent: an existing matching durable is used as it is
        assert (await stream.ensure_consumer(2)).config.filter_subject == "tf.part.2.>"
        with pytest.raises(ClusterError, match=r"partition 4 does not exist"):
            await stream.ensure_consumer(4)

    run(_with_js(nats_server, body))


def test_a_durable_with_another_filter_is_caught_not_changed(nats_server: NatsServer) -> None:
    """A dropped or wrong filter would deliver another partition's symbols: the read-back
    catches a durable that filters on another partition, and on nothing at all."""
    from nats.js.api import AckPolicy, ConsumerConfig

    async def body(js: Any) -> None:
        stream = ClusterStream(js, settings(partitions=4))
        await stream.ensure()
        await js.add_consumer("TF", ConsumerConfig(
            durable_name="TF_p1", filter_subject="tf.part.2.>", ack_policy=AckPolicy.ALL,
            max_ack_pending=20_000))
        with pytest.raises(ClusterConfigError, match=r"consumer 'TF_p1' differs .*filter_subject:"
                           r" asked 'tf\.part\.1\.>', the server has 'tf\.part\.2\.>'"):
            await stream.ensure_consumer(1)
        # still the other filter: the check changed nothing on the server
        assert (await js.consumer_info("TF", "TF_p1")).config.filter_subject == "tf.part.2.>"
        await js.add_consumer("TF", ConsumerConfig(
            durable_name="TF_p3", ack_policy=AckPolicy.ALL, max_ack_pending=20_000))
        with pytest.raises(ClusterConfigError, match=r"filter_subject: asked 'tf\.part\.3\.>', "
                           r"the server dropped it"):
            await stream.ensure_consumer(3)

    run(_with_js(nats_server, body))


def test_recreate_starts_delivery_at_the_given_sequence(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        stream = ClusterStream(js, settings(partitions=2))
        await stream.ensure()
        await stream.ensure_consumer(0)
        info = await stream.recreate_consumer(0, 42)
        assert info.config.deliver_policy == "by_start_sequence"
        assert info.config.opt_start_seq == 42
        # no durable yet is fine too: the takeover of a partition nobody consumed
        assert (await stream.recreate_consumer(1, 1)).config.opt_start_seq == 1
        with pytest.raises(ClusterError, match=r"starts at 1, not 0"):
            await stream.recreate_consumer(0, 0)

    run(_with_js(nats_server, body))
