"""A continuous pull loop on one partition's durable: messages in stream order, not ``fetch()``.

nats-py's ``fetch()`` waits for each batch and sometimes raises a bare ``asyncio.TimeoutError``
(the trial: ~35k msgs/s); keeping pull requests outstanding on a private inbox and refilling
them when half is delivered streams ~70k/s. Each pull request asks for ``batch`` messages and
expires after ``expires_s``; the server ends a request with a status message (404 no messages,
408 expired, 409 limits/leadership), which resets the credit so the loop asks again.

A ``gate`` holds back new pull requests while the engine is behind (runs in flight past a
bound): the backlog then waits in the stream, not in memory, and the checkpoints (which carry
the runs in flight) stay small.

The handler gets ``(stream_seq, msg)`` one at a time, in order, awaited before the next: the
subscription delivers from one task. Acks are not this module's: the partition's owner acks
(AckAll) the highest message a stored checkpoint covers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = ["PullLoop", "stream_seq_of"]

_ENDED: Final = frozenset({"404", "408", "409"})


def stream_seq_of(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, and the longer
    form with a domain and account hash in front: counted from the end)."""
    tokens = reply.split(".")
    return int(tokens[-4])


class PullLoop:
    """Pull ``durable`` of ``stream`` until cancelled, handing each message to ``handle``."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        handle: Callable[[int, Msg], Awaitable[None]],
        *,
        batch: int = 512,
        expires_s: float = 2.0,
        gate: Callable[[], bool] | None = None,
        opened: asyncio.Event | None = None,
    ) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.handle = handle
        self.batch = batch
        self.expires_s = expires_s
        # Flow control: no new pull request while gate() is false; whoever can make it true
        # sets ``opened`` (the node's checkpoint cadence, as runs finish).
        self.gate = gate
        self.opened = opened
        self.gated = 0
        self.credit = 0
        self.requests = 0
        self.delivered = 0
        self._want: asyncio.Event | None = None
        self._request = msgspec.json.encode(
            {"batch": batch, "expires": int(expires_s * 1e9)}
        )

    async def run(self) -> None:
        want = self._want = asyncio.Event()
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=self._on_msg, pending_msgs_limit=4 * self.batch)
        try:
            while True:
                want.clear()
                gate, opened = self.gate, self.opened
                if gate is not None and opened is not None:
                    while not gate():
                        self.gated += 1
                        opened.clear()
                        await opened.wait()
                await self.nc.publish(self.subject, self._request, reply=inbox)
                self.requests += 1
                self.credit += self.batch
                try:
                    # a request the server forgot (no status reached us) is asked again
                    async with asyncio.timeout(self.expires_s * 1.5):
                        await want.wait()
                except TimeoutError:
                    self.credit = 0
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        want = self._want
        assert want is not None
        headers = msg.headers
        if headers and not msg.reply:
            if headers.get("Status") in _ENDED:
                self.credit = 0
                want.set()
            return  # 100 (heartbeat) and the like carry nothing to apply
        self.credit -= 1
        if self.credit <= self.batch // 2:
            want.set()
        self.delivered += 1
        await self.handle(stream_seq_of(msg.reply), msg)
