"""Helpers for the cluster tests: connections to a real nats-server, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.nats_support import NatsServer

__all__ = ["connect", "run", "wait_until"]


async def connect(server: NatsServer, **options: Any) -> Any:
    import nats

    options.setdefault("allow_reconnect", False)
    options.setdefault("connect_timeout", 5)
    return await nats.connect(server.url, **options)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], within: float, what: str,
    *, every: float = 0.02,
) -> float:
    """Poll ``condition`` (a KV read or a flag: nothing pushes these) until true; seconds it
    took. ``TimeoutError`` naming ``what`` after ``within`` seconds."""
    start = time.monotonic()
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise TimeoutError(f"not within {within} s: {what}")
        await asyncio.sleep(every)


def run(body: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(body(), timeout)

    return asyncio.run(bounded())
