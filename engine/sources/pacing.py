"""Releasing events against an absolute timeline, shared by the simulator and replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["Pacer", "Sleep"]

Sleep = Callable[[float], Awaitable[None]]


class Pacer:
    """Holds each event back until its offset (seconds since the first call) has come.

    Offsets are measured from one anchor, never from the previous wake-up, so timer overshoot does
    not accumulate: a late wake-up releases everything that has come due in one batch. The clock is
    read only when an offset lies beyond the last reading, so a batch costs no clock call per event.

    Two guards keep a source a good neighbour on the event loop:

    * after ``max_batch`` events without a real sleep it yields once (``sleep(0)``), so a source
      running flat out, or catching up, cannot starve other tasks;
    * when it is more than ``max_lag`` seconds behind (the consumer pushed back for a while), it
      moves the timeline forward instead of bursting the whole backlog (counted in ``lag_resets``).
    """

    __slots__ = (
        "_anchor",
        "_lag_resets",
        "_max_batch",
        "_max_lag",
        "_monotonic",
        "_reached",
        "_since_yield",
        "_sleep",
    )

    def __init__(
        self,
        *,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        max_batch: int = 256,
        max_lag: float = 1.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_lag <= 0:
            raise ValueError("max_lag must be > 0")
        self._sleep = sleep
        self._monotonic = monotonic
        self._max_batch = max_batch
        self._max_lag = max_lag
        self._anchor: float | None = None
        self._reached = 0.0  # timeline position at the last clock reading
        self._since_yield = 0
        self._lag_resets = 0

    @property
    def lag_resets(self) -> int:
        return self._lag_resets

    async def wait_until(self, offset: float) -> None:
        """Return once ``offset`` seconds of the timeline have passed (0 for the first call)."""
        if self._anchor is None:
            self._anchor = self._monotonic()
        self._since_yield += 1
        if offset > self._reached:
            now = self._monotonic() - self._anchor
            if offset > now:
                await self._sleep(offset - now)
                self._since_yield = 0
                now = self._monotonic() - self._anchor
            elif now - offset > self._max_lag:
                self._anchor += now - offset
                self._lag_resets += 1
                now = offset
            self._reached = max(now, offset)
        if self._since_yield >= self._max_batch:
            self._since_yield = 0
            await self._sleep(0)
