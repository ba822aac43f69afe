"""The control plane's buckets against a real nats-server: created, read back, reopened."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engine.service.cluster.buckets import (
    bucket_names,
    ensure_bucket,
    ensure_control_buckets,
    kv_stream,
)
from engine.service.cluster.errors import ClusterConfigError, ClusterError
from tests.nats_support import NatsServer


def run_js(server: NatsServer, body: Callable[[Any], Awaitable[Any]]) -> Any:
    import nats

    async def main() -> Any:
        nc = await nats.connect(server.url, allow_reconnect=False)
        try:
            return await body(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def test_names_derive_from_the_stream() -> None:
    names = bucket_names("TF")
    assert (names.lease, names.members, names.orders, names.checkpoints) == (
        "TF_lease", "TF_members", "TF_orders", "TF_ckpt"
    )
    assert kv_stream("TF_lease") == "KV_TF_lease"


def test_created_buckets_have_the_config_asked_for(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        buckets = await ensure_control_buckets(js, stream="TF", lease_ttl_s=2.0, replicas=1)
        lease = await js.stream_info("KV_TF_lease")
        assert lease.config.max_age == pytest.approx(2.0)
        assert lease.config.max_msgs_per_subject == 1
        members = await js.stream_info("KV_TF_members")
        assert members.config.max_age == pytest.approx(2.0)
        orders = await js.stream_info("KV_TF_orders")
        assert not orders.config.max_age  # no TTL: an order id is registered forever
        assert orders.config.max_msgs_per_subject == 1
        # a second node opening the same buckets gets the same ones, nothing is recreated
        await buckets.lease.put("p0", b"x")
        again = await ensure_control_buckets(js, stream="TF", lease_ttl_s=2.0, replicas=1)
        assert (await again.lease.get("p0")).value == b"x"

    run_js(nats_server, body)


def test_an_existing_bucket_with_another_ttl_is_a_clear_error(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        await ensure_bucket(js, "TF_lease", ttl_s=2.0, history=1, replicas=1)
        with pytest.raises(ClusterConfigError, match=r"TF_lease.*max_age: asked 3\.0, the server "
                           r"has 2\.0"):
            await ensure_bucket(js, "TF_lease", ttl_s=3.0, history=1, replicas=1)

    run_js(nats_server, body)


def test_a_stream_in_the_way_with_another_history_is_named(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        await js.add_stream(name="KV_TF_orders", subjects=["$KV.TF_orders.>"],
                            max_msgs_per_subject=5, allow_rollup_hdrs=True, deny_delete=True)
        with pytest.raises(ClusterConfigError, match=r"max_msgs_per_subject: asked 1, the "
                           r"server has 5"):
            await ensure_bucket(js, "TF_orders", ttl_s=None, history=1, replicas=1)

    run_js(nats_server, body)


def test_more_replicas_than_servers_is_a_cluster_error(nats_server: NatsServer) -> None:
    async def body(js: Any) -> None:
        with pytest.raises(ClusterError, match=r"cannot create KV bucket 'TF_lease'"):
            await ensure_control_buckets(js, stream="TF", lease_ttl_s=2.0, replicas=3)

    run_js(nats_server, body)
