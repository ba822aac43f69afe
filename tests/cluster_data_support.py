"""Helpers for the data plane's tests: settings, a connection, a bounded ``asyncio.run``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from engine.config.schema import ClusterSettings

__all__ = ["Collected", "connect", "read_stream", "run", "settings", "wait_for"]

T = TypeVar("T")


def settings(**overrides: Any) -> ClusterSettings:
    base: dict[str, Any] = {"enabled": True, "prefix": "tf", "stream": "TF", "partitions": 8,
                            "node": "n1", "max_ack_pending": 20_000}
    base.update(overrides)
    return ClusterSettings(**base)


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """``asyncio.run`` with a deadline: a hung NATS call fails the test instead of the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def connect(url: str, **options: Any) -> Any:
    import nats

    options.setdefault("connect_timeout", 5)
    options.setdefault("max_reconnect_attempts", 100)
    options.setdefault("reconnect_time_wait", 0.05)
    return await nats.connect(url, **options)


class Collected(list[int]):
    """Sequences a deliver callback collected; :meth:`until` waits on a predicate over them,
    woken by each :meth:`add` (no polling for what this process itself changes)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def add(self, seq: int) -> None:
        self.append(seq)
        self._changed.set()

    async def until(
        self, predicate: Callable[[list[int]], bool], within: float = 10.0, what: str = ""
    ) -> None:
        try:
            async with asyncio.timeout(within):
                while not predicate(self):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"not true within {within} s: {what} (have {len(self)})") from None


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``within`` s.
    Only for state another process (the server) or nats-py's reconnect changes: nothing here
    is told when it does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = condition()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"not true within {within} s: {what}")
        await asyncio.sleep(0.01)


async def read_stream(js: Any, stream: str, subjects: str) -> list[tuple[int, str, str, bytes]]:
    """Every message of ``stream`` as ``(seq, subject, Nats-Msg-Id, payload)`` in stream
    order, read through an ephemeral consumer (the tests' reader, not the data plane's)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    info = await js.stream_info(stream)
    total = info.state.messages
    sub = await js.pull_subscribe(subjects, stream=stream,
                                  config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    out: list[tuple[int, str, str, bytes]] = []
    try:
        while len(out) < total:
            for msg in await sub.fetch(min(1000, total - len(out)), timeout=5):
                out.append((msg.metadata.sequence.stream, msg.subject,
                            (msg.headers or {}).get("Nats-Msg-Id", ""), msg.data))
    finally:
        await sub.unsubscribe()
    return out
