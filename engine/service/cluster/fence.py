"""Fenced writes: a per-partition key only the current lease tenure can write.

A lease alone cannot stop a process that was paused past its lease (SIGSTOP, a stalled VM):
it resumes believing it still owns the partition, and checking the lease before a write is a
check-then-act race. The write itself must be conditional. :class:`FencedKey` makes every
write to one key (the data plane's checkpoint ``p<p>`` in ``<stream>_ckpt``) a compare-and-set
on the revision this tenure last wrote or read, and stamps it with the tenure's token (the
lease's acquiring revision) in a ``Tickflow-Fence`` message header -- the payload is stored
untouched, so the checkpoint stays whatever JSON the data plane writes.

The protocol, for the data plane:

1. acquire the lease; ``fence = FencedKey(js, bucket, f"p{p}", lease)``;
2. ``payload = await fence.claim()``: reads the key and re-writes it (same payload) under this
   token with CAS. From this moment any write by an earlier tenure fails: its CAS revision is
   stale. ``claim`` refuses (:class:`LeaseLost`) when the key already carries a *newer* token
   (this node acquired, stalled, and a later tenure has written since). The payload returned
   is the state to resume from: exactly what the previous tenure last stored;
3. every checkpoint: ``await fence.write(payload)``; :class:`LeaseLost` means another tenure
   claimed the key -- stop, ack nothing more, the new owner replays from its checkpoint.

So a stale owner can apply events locally after losing its lease, but it cannot make them
durable, and it acks stream messages only once a checkpoint covering them is stored (the data
plane's rule): nothing it does after the new owner's claim survives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .errors import ClusterError, LeaseLost

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from .lease import HeldLease

__all__ = ["FENCE_HEADER", "FencedKey"]

FENCE_HEADER: Final = "Tickflow-Fence"
_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE: Final = (10071, 10164)
_KV_OP: Final = "KV-Operation"


class FencedKey:
    """One KV key written only with CAS under a lease's token (see the module doc)."""

    def __init__(self, js: JetStreamContext, bucket: str, key: str, lease: HeldLease) -> None:
        self.js = js
        self.bucket = bucket
        self.key = key
        self.lease = lease
        self.token = lease.token
        self.subject = f"$KV.{bucket}.{key}"
        self.stream = f"KV_{bucket}"
        self.revision: int | None = None  # set by claim: the CAS position of the next write

    async def read(self) -> tuple[bytes | None, int, int]:
        """``(payload, revision, token)`` of the key now. ``payload`` is None when the key
        was never written (``rev`` 0), was deleted, or holds only a claim (empty: a tenure
        claimed it before any checkpoint existed)."""
        from nats.js.errors import NotFoundError

        try:
            msg = await self.js.get_msg(self.stream, subject=self.subject)
        except NotFoundError:
            return None, 0, 0
        headers = msg.headers or {}
        token = int(headers.get(FENCE_HEADER, "0") or 0)
        if headers.get(_KV_OP) in ("DEL", "PURGE") or not msg.data:
            return None, msg.seq or 0, token
        return msg.data, msg.seq or 0, token

    async def claim(self, *, attempts: int = 8) -> bytes | None:
        """Make this tenure the key's only writer and return the payload stored before it
        (None when there is none). :class:`LeaseLost` when the lease is gone or a newer token
        already wrote the key."""
        for _ in range(attempts):
            self.lease.check()
            payload, revision, token = await self.read()
            if token > self.token:
                raise LeaseLost(
                    f"{self.key}: written under token {token}, newer than this tenure's "
                    f"{self.token}: a later owner exists"
                )
            try:
                # Written even when there is nothing to carry over (an empty claim): an
                # earlier tenure's first write must find the key taken, not free.
                self.revision = await self._publish(payload or b"", revision)
            except _Conflict:
                continue  # an earlier tenure wrote between our read and our claim: re-read
            return payload
        raise ClusterError(f"{self.key}: could not claim in {attempts} attempts (it keeps "
                           "changing: is an earlier owner still writing?)")

    async def write(self, payload: bytes) -> int:
        """Store ``payload`` if no other tenure wrote the key since our claim or last write;
        :class:`LeaseLost` otherwise (and when the lease has ended locally)."""
        if self.revision is None:
            raise ClusterError(f"{self.key}: write before claim")
        self.lease.check()
        try:
            self.revision = await self._publish(payload, self.revision)
        except _Conflict as exc:
            raise LeaseLost(
                f"{self.key}: another tenure wrote it since revision {self.revision} "
                f"(this token {self.token} is fenced off)"
            ) from exc
        return self.revision

    async def _publish(self, payload: bytes, last: int) -> int:
        from nats.js.errors import APIError

        headers = {_EXPECTED_LAST_SUBJECT_SEQ: str(last), FENCE_HEADER: str(self.token)}
        try:
            ack = await self.js.publish(self.subject, payload, headers=headers)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise _Conflict from exc
            raise
        return int(ack.seq)


class _Conflict(ClusterError):
    """The key's last revision is not the one this write expected."""
