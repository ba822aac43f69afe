"""Which nodes are alive: one heartbeat key per node in the membership bucket (TTL =
``lease_ttl_s``).

A node joins with ``create`` on its key and heartbeats with ``update(last=rev)`` every
``ttl / 3``; a node that stops (crash, kill -9, a lost connection, a pause) drops out of the
live set by itself when its key expires. The live set is whatever keys exist now: an expiry
emits no watch event on 2.9, so it is listed afresh each time (:func:`list_members`).

Two processes with the same ``[cluster] node`` name would compute the same assignment for
different leases and fight over them; the join's ``create`` refuses a name a live node
heartbeats under (after waiting out one TTL, so a node restarting under its own name right
after a crash gets its name back once the old heartbeat has expired).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from .buckets import escape_key
from .cluster_metrics import ClusterStats
from .errors import ClusterError

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

__all__ = ["MemberRecord", "MemberView", "Membership", "list_members", "member_key"]

log = logging.getLogger("tickflow.cluster.membership")

def member_key(node: str) -> str:
    """``node``'s heartbeat key (:func:`~.buckets.escape_key`): the record keeps the real
    name, the key only has to be unique."""
    return escape_key(node)


class MemberRecord(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    instance: str
    started: float  # wall clock, Unix seconds: for people
    beat: float  # wall clock of this heartbeat: for people (ages across hosts carry skew)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(MemberRecord).decode


@dataclass(frozen=True, slots=True)
class MemberView:
    record: MemberRecord
    revision: int


async def list_members(kv: KeyValue, *, timeout_s: float = 5.0) -> dict[str, MemberView]:
    """Every live member, by node name (one ordered-consumer pass over the bucket)."""
    watcher = await kv.watchall(ignore_deletes=True)
    members: dict[str, MemberView] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=timeout_s)  # type: ignore[no-untyped-call]
            if entry is None:
                break
            if entry.value is None or entry.revision is None:
                continue
            try:
                record = _decode(entry.value)
            except msgspec.DecodeError:
                log.warning("membership key %r holds no member record; ignored", entry.key)
                continue
            members[record.node] = MemberView(record, entry.revision)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return members


class Membership:
    """This node's heartbeat. ``join`` once, then ``run`` (or ``beat`` by hand); ``leave`` on
    a graceful shutdown, so the others rebalance at once instead of after the TTL."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        node: str,
        instance: str,
        ttl_s: float,
        stats: ClusterStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.node = node
        self.key = member_key(node)
        self.instance = instance
        self.ttl_s = ttl_s
        self.beat_every_s = ttl_s / 3
        self.stats = stats or ClusterStats()
        self.clock = clock
        self.wall = wall
        self.started = wall()
        self.revision: int | None = None

    def _value(self) -> bytes:
        return _encode(MemberRecord(
            node=self.node, instance=self.instance, started=self.started, beat=self.wall()
        ))

    async def _create(self) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            self.revision = await self.kv.create(self.key, self._value())
        except KeyWrongLastSequenceError:
            return False
        self.stats.heartbeats += 1
        return True

    async def join(self, *, wait_s: float | None = None) -> None:
        """Register this node; wait up to ``wait_s`` (default one TTL and a second) for a
        previous heartbeat under the same name to expire, then :class:`ClusterError`."""
        deadline = self.clock() + (self.ttl_s + 1.0 if wait_s is None else wait_s)
        while not await self._create():
            if self.clock() >= deadline:
                holder = await self._holder()
                raise ClusterError(
                    f"node name {self.node!r} is in use by a live node ({holder}): give every "
                    "node its own [cluster] node name (empty means host:pid)"
                )
            # nothing announces an expiry on 2.9: poll at a tenth of the TTL
            await asyncio.sleep(self.ttl_s / 10)
        log.info("joined the cluster as %r", self.node, extra={"node": self.node})

    async def _holder(self) -> str:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return "it expired just now"
        try:
            record = _decode(entry.value or b"")
        except msgspec.DecodeError:
            return "an unreadable record"
        return f"instance {record.instance}, last heartbeat {self.wall() - record.beat:.1f} s ago"

    async def beat(self) -> None:
        """One heartbeat. A CAS failure means our key expired (this process stalled past the
        TTL) or was deleted: rejoin with ``create``; if another live process holds the name
        by then, :class:`ClusterError`."""
        from nats.js.errors import KeyWrongLastSequenceError

        if self.revision is None:
            if not await self._create():
                raise ClusterError(f"node name {self.node!r} was taken by another live node")
            return
        try:
            self.revision = await self.kv.update(self.key, self._value(), last=self.revision)
        except KeyWrongLastSequenceError:
            log.warning("heartbeat key of %r changed under us (expired while stalled?): "
                        "rejoining", self.node)
            self.revision = None
            if not await self._create():
                raise ClusterError(
                    f"node name {self.node!r} was taken by another live node while this one "
                    "stalled"
                ) from None
            return
        self.stats.heartbeats += 1

    async def run(self) -> None:
        """Heartbeat every ttl/3 until cancelled. A failed heartbeat is counted and retried at
        the next period (the leases decide ownership; a node whose heartbeats keep failing
        drops out of the live set and the others take its partitions)."""
        while True:
            await asyncio.sleep(self.beat_every_s)
            try:
                await self.beat()
            except ClusterError:
                raise
            except Exception as exc:  # a client error: this heartbeat did not happen
                self.stats.heartbeat_failures += 1
                log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)
                if _closed(exc):
                    raise ClusterError(f"the NATS connection is closed: {exc}") from exc

    async def leave(self) -> None:
        """Delete our key at our revision: the others see us gone at their next poll."""
        if self.revision is None:
            return
        revision, self.revision = self.revision, None
        try:
            await self.kv.delete(self.key, last=revision)
        except Exception as exc:  # it expires by its TTL anyway
            log.info("leave not written (%s: %s); the heartbeat expires by its TTL",
                     type(exc).__name__, exc)


def _closed(exc: BaseException) -> bool:
    from nats.errors import ConnectionClosedError

    return isinstance(exc, ConnectionClosedError)
