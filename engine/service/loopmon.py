"""Event-loop lag: how late a periodic wake-up runs.

A task asks to be woken every ``interval`` seconds and measures, on the loop's own clock, how
much later than asked it actually ran. Anything that holds the loop (an inline action, a long
callback, a blocking call) shows up as lag; the monitor itself costs one timer per interval.
"""

from __future__ import annotations

import asyncio
from collections import deque

from fastpath.latency import LatencyHistogram

__all__ = ["LoopMonitor"]


class LoopMonitor:
    """Measures event-loop lag every ``interval`` seconds while :meth:`run` runs."""

    def __init__(self, interval: float = 0.25, window: int = 20) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self.lag = 0.0  # the latest measurement, seconds
        self.samples = 0
        self.histogram = LatencyHistogram()
        self._recent: deque[float] = deque(maxlen=max(1, window))
        self._last_wake: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def max_recent(self) -> float:
        """The largest lag of the last ``window`` wake-ups (0 before the first one)."""
        return max(self._recent, default=0.0)

    def alive(self, now: float | None = None, stale_after: float | None = None) -> bool:
        """Is the monitor running and has it woken recently (loop responsive)?"""
        task = self._task
        if task is None:
            return True  # not started yet (the daemon is still opening storage): not stalled
        if task.done():
            return False
        last = self._last_wake
        if last is None:
            return True  # started, first wake-up not due yet
        if now is None:
            now = asyncio.get_running_loop().time()
        limit = stale_after if stale_after is not None else max(2.0, 10 * self.interval)
        return now - last <= limit

    def record(self, lag: float) -> None:
        lag = max(0.0, lag)
        self.lag = lag
        self.samples += 1
        self._recent.append(lag)
        self.histogram.record(lag)

    async def run(self) -> None:
        """The monitor's task body: run it in the engine's task group, cancel it to stop."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        interval = self.interval
        self._last_wake = loop.time()
        while True:
            expected = loop.time() + interval
            await asyncio.sleep(interval)  # a period, not a wait for a condition
            now = loop.time()
            self._last_wake = now
            self.record(now - expected)
