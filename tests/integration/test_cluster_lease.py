"""Partition leases and fenced writes against a real nats-server, each node on its own
connection: acquire/renew/release, loss the moment a renewal fails or cannot finish in time,
and a paused owner fenced off by the revision token."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from engine.service.cluster.buckets import ensure_bucket
from engine.service.cluster.cluster_metrics import ClusterStats
from engine.service.cluster.errors import ClusterError, LeaseLost
from engine.service.cluster.fence import FENCE_HEADER, FencedKey
from engine.service.cluster.lease import HeldLease, LeaseTable, read_lease
from tests.cluster_support import connect, run, wait_until
from tests.nats_support import NatsServer

TTL = 1.5


async def _table(server: NatsServer, node: str, **options: Any) -> tuple[Any, LeaseTable]:
    nc = await connect(server)
    kv = await ensure_bucket(nc.jetstream(), "T_lease", ttl_s=TTL, history=1, replicas=1)
    return nc, LeaseTable(kv, node=node, instance=f"{node}-i", ttl_s=TTL, **options)


def test_one_holder_renews_and_a_release_frees_the_key_at_once(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc_a, a = await _table(nats_server, "a")
        nc_b, b = await _table(nats_server, "b")
        lease = await a.try_acquire(3)
        assert lease is not None
        assert lease.held
        assert lease.token == lease.revision
        assert await b.try_acquire(3) is None
        first_record, _rev = await read_lease(b.kv, 3) or (None, 0)
        assert first_record is not None
        # renewals move the revision (the CAS position), never the token
        await wait_until(lambda: a.stats.lease_renewals >= 3, 3 * TTL, "three renewals")
        assert lease.revision > lease.token
        assert lease.held
        record, revision = await read_lease(b.kv, 3) or (None, 0)
        assert record is not None
        assert record.node == "a"
        assert record.token == lease.token
        assert revision == lease.revision
        assert record.acquired == first_record.acquired == lease.acquired  # not the last renewal
        await lease.release()
        assert not lease.held
        assert lease.lost_reason is None
        # no TTL wait: the delete at our revision frees it for the next create
        taken = await b.try_acquire(3, takeover=True)
        assert taken is not None
        assert taken.token > lease.token
        assert (b.stats.acquisitions, b.stats.takeovers, a.stats.lease_releases) == (1, 1, 1)
        assert sum(a.stats.lease_losses.values()) == 0
        await taken.release()
        await nc_a.close()
        await nc_b.close()

    run(body)


def test_a_dead_holders_lease_expires_and_its_connection_loss_is_a_loss(
    nats_server: NatsServer,
) -> None:
    async def body() -> None:
        nc_a, a = await _table(nats_server, "a")
        nc_b, b = await _table(nats_server, "b")
        lease = await a.try_acquire(0)
        assert lease is not None
        lost: list[LeaseLost] = []
        lease.on_lost(lambda _lease, error: lost.append(error))
        work = lease.bind(asyncio.ensure_future(asyncio.Event().wait()))
        killed_at = time.monotonic()
        await nc_a.close()  # the node's connection dies: no more renewals, no release
        await wait_until(lambda: lease.ended.is_set(), TTL, "the holder notices")
        assert lease.lost_reason in ("closed", "renewal_failed")
        assert lost
        assert work.cancelled() or work.done()
        got: list[HeldLease] = []

        async def acquired() -> bool:
            taken = await b.try_acquire(0)
            if taken is not None:
                got.append(taken)
            return bool(got)

        await wait_until(acquired, TTL + 1.0, "the standby acquires after the TTL")
        # it could not have been earlier than the TTL after the last renewal
        assert time.monotonic() - killed_at >= TTL - lease.table.renew_every_s - 0.05
        await got[0].release()
        await nc_b.close()

    run(body)


def test_a_jump_of_the_local_clock_past_the_deadline_loses_the_lease_at_once(
    nats_server: NatsServer,
) -> None:
    """A process that was paused longer than its lease must not act when it resumes: the
    local deadline, not the next renewal's answer, decides."""
    offset = [0.0]

    async def body() -> None:
        stats = ClusterStats()
        nc, a = await _table(nats_server, "a", stats=stats,
                             clock=lambda: time.monotonic() + offset[0])
        lease = await a.try_acquire(1)
        assert lease is not None
        lease.check()
        lost: list[str] = []
        lease.on_lost(lambda _lease, error: lost.append(str(error)))
        never = asyncio.Event()
        guarded = asyncio.ensure_future(lease.guard(never.wait()))
        await asyncio.sleep(0)  # let the guarded work start
        offset[0] = 10 * TTL
        assert not lease.held  # no I/O needed to know
        with pytest.raises(LeaseLost, match="expired by the local clock"):
            lease.check()
        with pytest.raises(LeaseLost, match="expired_locally"):
            await asyncio.wait_for(guarded, TTL)
        assert lost
        assert stats.lease_losses["expired_locally"] == 1
        assert stats.partitions_owned == 0
        assert 1 not in a.held
        await nc.close()

    run(body)


def test_a_renewal_that_cannot_finish_before_the_deadline_loses_the_lease(
    nats_server: NatsServer,
) -> None:
    """The server stops answering (SIGSTOP): the renewal hangs, and the lease is lost when
    the local deadline passes, not when the client's 5 s request timeout would fire."""
    assert nats_server.proc is not None
    pid = nats_server.proc.pid

    async def body() -> None:
        nc, a = await _table(nats_server, "a")
        lease = await a.try_acquire(2)
        assert lease is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            await wait_until(lambda: lease.ended.is_set(), 2 * TTL, "the lease ends")
            ended_after = time.monotonic() - stopped_at
        finally:
            os.kill(pid, signal.SIGCONT)
        assert lease.lost_reason == "expired_locally"
        assert ended_after < 4.0  # the local deadline (~TTL), not the client's 5 s timeout
        await nc.close()

    run(body)


def test_superseded_when_the_key_changed_under_the_holder(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc_a, a = await _table(nats_server, "a")
        nc_b, b = await _table(nats_server, "b")
        lease = await a.try_acquire(4)
        assert lease is not None
        await b.kv.delete("p4")  # an operator deletes the lease by hand
        stolen = await b.try_acquire(4)
        assert stolen is not None
        await wait_until(lambda: lease.ended.is_set(), TTL, "the holder's renewal fails")
        assert lease.lost_reason == "superseded"
        assert stolen.held
        await stolen.release()
        await nc_a.close()
        await nc_b.close()

    run(body)


def test_a_paused_owner_is_fenced_off_by_the_newer_token(nats_server: NatsServer) -> None:
    """A holds the lease and checkpoints; A stops renewing while its clock says no time
    passed (a paused process); B acquires after the TTL and claims the checkpoint key: A's
    next write and any re-claim by A are refused, and B resumes from A's last payload."""
    frozen = [time.monotonic()]

    async def body() -> None:
        nc_a, a = await _table(nats_server, "a", clock=lambda: frozen[0])
        nc_b, b = await _table(nats_server, "b")
        js_a, js_b = nc_a.jetstream(), nc_b.jetstream()
        await ensure_bucket(js_a, "T_ckpt", ttl_s=None, history=1, replicas=1)
        lease_a = await a.try_acquire(5)
        assert lease_a is not None
        fence_a = FencedKey(js_a, "T_ckpt", "p5", lease_a)
        assert await fence_a.claim() is None
        await fence_a.write(b'{"seq": 10}')
        await fence_a.write(b'{"seq": 20}')
        assert lease_a._keeper is not None
        lease_a._keeper.cancel()  # paused: no renewals, and its frozen clock sees no time pass
        got: list[HeldLease] = []

        async def acquired() -> bool:
            taken = await b.try_acquire(5)
            if taken is not None:
                got.append(taken)
            return bool(got)

        await wait_until(acquired, TTL + 1.0, "B acquires the expired lease")
        lease_b = got[0]
        assert lease_b.token > lease_a.token
        assert lease_a.held
        fence_b = FencedKey(js_b, "T_ckpt", "p5", lease_b)
        assert await fence_b.claim() == b'{"seq": 20}'
        with pytest.raises(LeaseLost, match=r"another tenure wrote it .* fenced off"):
            await fence_a.write(b'{"seq": 30}')
        stale = FencedKey(js_a, "T_ckpt", "p5", lease_a)
        with pytest.raises(LeaseLost, match="newer than this tenure"):
            await stale.claim()
        await fence_b.write(b'{"seq": 25}')
        payload, _revision, token = await fence_b.read()
        assert (payload, token) == (b'{"seq": 25}', lease_b.token)
        raw = await js_b.get_msg("KV_T_ckpt", subject="$KV.T_ckpt.p5")
        assert raw.headers[FENCE_HEADER] == str(lease_b.token)
        await lease_b.release()
        await nc_a.close()
        await nc_b.close()

    run(body)


def test_a_claim_with_nothing_to_carry_over_still_fences_the_key(nats_server: NatsServer) -> None:
    """The first tenure of a partition claims a key that does not exist: it writes an empty
    claim (so an earlier, stale tenure cannot take the free key), and the next tenure's claim
    reads that as "no checkpoint", not as an empty one."""

    async def body() -> None:
        nc, a = await _table(nats_server, "a")
        js = nc.jetstream()
        await ensure_bucket(js, "T_ckpt", ttl_s=None, history=1, replicas=1)
        first = await a.try_acquire(6)
        assert first is not None
        fence = FencedKey(js, "T_ckpt", "p6", first)
        with pytest.raises(ClusterError, match="write before claim"):
            await fence.write(b"x")
        assert await fence.claim() is None
        payload, revision, token = await fence.read()
        assert (payload, token) == (None, first.token)
        assert revision > 0  # the key exists: taken, not free
        await first.release()
        second = await a.try_acquire(6)
        assert second is not None
        assert await FencedKey(js, "T_ckpt", "p6", second).claim() is None
        await second.release()
        await nc.close()

    run(body)
