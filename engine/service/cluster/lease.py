"""Partition leases: one KV key per partition in the lease bucket (a TTL of ``lease_ttl_s``).

Acquire with ``create`` (fails while anyone holds the key), renew with ``update(last=rev)``
every ``ttl / 3`` (fails once anyone else wrote the key), release with ``delete(last=rev)`` so a
successor need not wait for the TTL. A lease nobody renews expires on the server ``ttl`` after
its last write; 2.9 emits no watch event for that, so standbys poll ``create``
(:mod:`.ownership`).

The holder's view is bounded by its own clock: a renewal counts from the moment it was *sent*
(the server stamped it later, so it expires there later still), and the lease is held locally
only until ``sent + ttl - margin``. The moment a renewal fails, or cannot complete before that
local deadline, the lease is lost: :attr:`HeldLease.held` turns false, the bound tasks are
cancelled and the ``on_lost`` callbacks run -- consumption stops at once, before any other node
can acquire the key.

The revision ``create`` returned is the **fencing token** of the tenure: a KV revision is the
bucket stream's sequence, so every later tenure of any partition has a larger one. A process
paused past its lease (SIGSTOP, a long GC, a VM migration) still believes in its token when it
resumes; the writes that matter go through :class:`~.fence.FencedKey`, which refuses them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from .cluster_metrics import ClusterStats
from .errors import ClusterError, LeaseLost

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

__all__ = ["HeldLease", "LeaseRecord", "LeaseTable", "decode_record", "lease_key", "read_lease"]

log = logging.getLogger("tickflow.cluster.lease")

T = TypeVar("T")



def lease_key(partition: int) -> str:
    return f"p{partition}"


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A lease's value: who holds it since when. ``token`` is the acquiring revision, written
    from the first renewal on (``create`` cannot know its own revision): 0 means "this
    revision"."""

    node: str
    instance: str
    acquired: float  # wall clock (Unix seconds) at acquisition: for people, not for decisions
    token: int = 0


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(LeaseRecord).decode


def decode_record(value: bytes) -> LeaseRecord:
    try:
        return _decode(value)
    except msgspec.DecodeError as exc:
        raise ClusterError(f"a lease value is not a lease record: {value[:80]!r}") from exc


class HeldLease:
    """One partition's lease while this node holds it.

    ``token`` never changes during the tenure; ``revision`` moves with every renewal (the CAS
    position). ``held`` is the local truth: false from the moment the lease is lost or
    released. Bind the tasks that work for the partition (:meth:`bind`) or run them through
    :meth:`guard`: a loss cancels them at once.
    """

    def __init__(
        self, table: LeaseTable, partition: int, revision: int, sent_at: float, acquired: float
    ) -> None:
        self.table = table
        self.acquired = acquired  # wall clock of the acquisition, rewritten by every renewal
        self.partition = partition
        self.key = lease_key(partition)
        self.token = revision
        self.revision = revision
        self.deadline = sent_at + table.ttl_s - table.margin_s
        self.renewed_at = sent_at
        self.ended = asyncio.Event()
        self.lost_reason: str | None = None  # None while held, or after a graceful release
        self._callbacks: list[Callable[[HeldLease, LeaseLost], None]] = []
        self._bound: set[asyncio.Future[Any]] = set()
        self._keeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "held" if self.held else f"ended ({self.lost_reason or 'released'})"
        return f"<HeldLease p{self.partition} token={self.token} rev={self.revision} {state}>"

    @property
    def held(self) -> bool:
        return not self.ended.is_set() and self.table.clock() < self.deadline

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is held by the local clock right now."""
        if self.ended.is_set():
            raise LeaseLost(f"partition {self.partition}: lease "
                            f"{self.lost_reason or 'released'} (token {self.token})")
        if self.table.clock() >= self.deadline:
            self._lose("expired_locally", "the local clock passed the lease's deadline")
            raise LeaseLost(f"partition {self.partition}: lease expired by the local clock "
                            f"(token {self.token})")

    def on_lost(self, callback: Callable[[HeldLease, LeaseLost], None]) -> None:
        """Call ``callback(lease, error)`` once when the lease is lost (not when released);
        at once when it is already lost."""
        if self.ended.is_set():
            if self.lost_reason is not None:
                callback(self, LeaseLost(f"partition {self.partition}: {self.lost_reason}"))
            return
        self._callbacks.append(callback)

    def bind(self, task: asyncio.Future[T]) -> asyncio.Future[T]:
        """Cancel ``task`` the moment the lease ends (lost or released)."""
        if self.ended.is_set():
            task.cancel()
            return task
        self._bound.add(task)
        task.add_done_callback(self._bound.discard)
        return task

    async def guard(self, work: Awaitable[T]) -> T:
        """Run ``work`` while the lease is held; :class:`LeaseLost` when it ends first."""
        self.check()
        task = self.bind(asyncio.ensure_future(work))
        try:
            return await task
        except asyncio.CancelledError:
            if self.ended.is_set():
                raise LeaseLost(f"partition {self.partition}: lease "
                                f"{self.lost_reason or 'released'}; work cancelled") from None
            raise

    def _end(self) -> None:
        self.ended.set()
        for task in list(self._bound):
            task.cancel()
        self._bound.clear()
        if self._keeper is not None and self._keeper is not asyncio.current_task():
            self._keeper.cancel()

    def _lose(self, reason: str, detail: str) -> None:
        if self.ended.is_set():
            return
        self.lost_reason = reason
        self._end()
        self.table.stats.lost(reason)
        self.table.forget(self)
        log.warning("lease on partition %d lost (%s): %s", self.partition, reason, detail,
                    extra={"partition": self.partition, "token": self.token})
        error = LeaseLost(f"partition {self.partition}: {reason}: {detail}")
        for callback in self._callbacks:
            try:
                callback(self, error)
            except Exception:  # one failing callback must not keep the others from stopping
                log.exception("a lease-lost callback failed")
        self._callbacks.clear()

    async def _keep(self) -> None:
        """Renew every ttl/3 until the lease ends; lose it the moment a renewal fails or cannot
        complete before the local deadline."""
        table = self.table
        from nats.errors import ConnectionClosedError
        from nats.js.errors import KeyWrongLastSequenceError

        while not self.ended.is_set():
            wake = min(self.renewed_at + table.renew_every_s, self.deadline)
            await asyncio.sleep(max(0.0, wake - table.clock()))
            if self.ended.is_set():
                return
            sent = table.clock()
            remaining = self.deadline - sent
            if remaining <= 0:
                self._lose("expired_locally",
                           "no renewal completed before the lease's local deadline")
                return
            value = table.record_value(token=self.token, acquired=self.acquired)
            try:
                revision = await asyncio.wait_for(
                    table.kv.update(self.key, value, last=self.revision), timeout=remaining
                )
            except TimeoutError as exc:  # wait_for's, or the client's own request timeout
                if table.clock() >= self.deadline - 1e-3:
                    self._lose("expired_locally",
                               "the renewal did not complete before the lease's local deadline")
                else:
                    self._lose("renewal_failed", f"the renewal timed out ({exc})")
                return
            except KeyWrongLastSequenceError:
                self._lose("superseded", "the key changed since our last revision "
                           "(it expired and another node acquired it, or it was deleted)")
                return
            except ConnectionClosedError as exc:
                self._lose("closed", f"the NATS connection is closed ({exc})")
                return
            except Exception as exc:  # any other client failure: the renewal did not happen
                self._lose("renewal_failed", f"{type(exc).__name__}: {exc}")
                return
            if self.ended.is_set():
                return
            self.revision = revision
            self.renewed_at = sent
            self.deadline = sent + table.ttl_s - table.margin_s
            table.stats.lease_renewals += 1

    async def release(self) -> None:
        """Give the lease up: stop renewing, end it locally first (nothing may act on the
        partition from here on), then delete the key at our revision so a successor does not
        wait for the TTL. A lease already lost is left alone (someone else may hold it)."""
        if self.ended.is_set():
            return
        self._end()
        self.table.forget(self)
        self.table.stats.lease_releases += 1
        from nats.js.errors import APIError

        try:
            await asyncio.wait_for(self.table.kv.delete(self.key, last=self.revision),
                                   timeout=max(0.1, self.deadline - self.table.clock()))
        except (APIError, TimeoutError, OSError) as exc:
            # the key expires by its TTL anyway; a wrong-revision error means it already has
            log.info("lease on partition %d: release not written (%s); it expires by its TTL",
                     self.partition, exc)
        except Exception as exc:  # a closed connection: same outcome, the TTL frees it
            log.info("lease on partition %d: release not written (%s: %s)",
                     self.partition, type(exc).__name__, exc)
        if self._keeper is not None:
            # wait, not await: the keeper's own cancellation is no error of ours
            await asyncio.wait([self._keeper])


class LeaseTable:
    """This node's side of the lease bucket: acquire, and keep what it holds renewed.

    ``clock`` is the monotonic clock that bounds the leases (injected by tests to simulate a
    pause or a clock jump); ``wall`` only stamps the records for people to read.
    """

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
        margin_s: float | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_s}")
        self.kv = kv
        self.node = node
        self.instance = instance
        self.ttl_s = ttl_s
        self.renew_every_s = ttl_s / 3
        # Room for the server's and this host's clocks to run at slightly different rates
        # and for the expiry to be noticed late: the local view ends a tenth of a TTL early.
        self.margin_s = ttl_s / 10 if margin_s is None else margin_s
        self.stats = stats or ClusterStats()
        self.clock = clock
        self.wall = wall
        self.held: dict[int, HeldLease] = {}

    def record_value(self, *, acquired: float, token: int = 0) -> bytes:
        return _encode(LeaseRecord(
            node=self.node, instance=self.instance, acquired=acquired, token=token
        ))

    def forget(self, lease: HeldLease) -> None:
        if self.held.get(lease.partition) is lease:
            del self.held[lease.partition]
        self.stats.partitions_owned = len(self.held)

    async def try_acquire(self, partition: int, *, takeover: bool = False) -> HeldLease | None:
        """The lease on ``partition`` when its key is free (never written, expired or released);
        None while another holder has it. ``takeover`` marks an acquisition after waiting on
        another node's lease (counted as a takeover)."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        current = self.held.get(partition)
        if current is not None and current.held:
            return current
        sent, acquired = self.clock(), self.wall()
        try:
            revision = await self.kv.create(lease_key(partition),
                                            self.record_value(acquired=acquired))
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            # nats-py's create, refused, reads the key to see whether it was deleted: a lease
            # that expires between the two answers "not found". Either way not ours this
            # time; the next poll asks again.
            return None
        lease = HeldLease(self, partition, revision, sent, acquired)
        self.held[partition] = lease
        self.stats.acquisitions += 1
        self.stats.takeovers += takeover
        self.stats.partitions_owned = len(self.held)
        lease._keeper = asyncio.create_task(lease._keep(), name=f"lease-p{partition}")
        log.info("lease on partition %d acquired (token %d)", partition, revision,
                 extra={"partition": partition, "token": revision})
        return lease

    async def release_all(self) -> None:
        for lease in list(self.held.values()):
            await lease.release()

    def abandon(self) -> None:
        """Stop renewing everything without writing (the connection is gone): the leases end
        locally now and expire on the server by their TTL."""
        for lease in list(self.held.values()):
            lease._lose("closed", "the node abandoned its leases")


async def read_lease(kv: KeyValue, partition: int) -> tuple[LeaseRecord, int] | None:
    """``(record, revision)`` of the lease on ``partition``; None when nobody holds it."""
    from nats.js.errors import KeyNotFoundError

    try:
        entry = await kv.get(lease_key(partition))
    except KeyNotFoundError:
        return None
    if entry.value is None or entry.revision is None:
        return None
    return decode_record(entry.value), entry.revision

