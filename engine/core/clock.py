"""Time for the engine: a monotonic ``now``, a wall clock, and timers.

The engine never reads time or schedules a timer except through a :class:`Clock`, so tests can
drive timeouts and retry backoff with :class:`FakeClock` deterministically, with no sleeping,
and a backtest runs the whole engine on :class:`VirtualClock` (docs/backtest.md).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import selectors
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "FakeClock", "LoopClock", "TimerHandle", "VirtualClock", "VirtualTimeLoop"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds: for latencies, deadlines and timers."""

    def wall(self) -> float:
        """Epoch seconds: for records a person reads."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on the event loop after ``delay`` seconds."""


class LoopClock:
    """The real clock: a high-resolution monotonic time, and the running loop's timers.

    ``now`` is ``time.perf_counter`` rather than ``loop.time()``: uvloop's loop time is libuv's
    cached millisecond clock, far too coarse for the microsecond latencies measured here.
    """

    __slots__ = ("_loop", "now", "wall")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        # The builtins themselves, not methods wrapping them: ``now`` is read several times
        # per step, ``wall`` once per run.
        self.now: Callable[[], float] = time.perf_counter
        self.wall: Callable[[], float] = time.time

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self._loop.call_later(delay, callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time that moves only when a test calls :meth:`advance`; timers fire in order then."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def pending(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def next_deadline(self) -> float | None:
        live = [when for when, _, t in self._timers if not t.cancelled]
        return min(live) if live else None

    def advance(self, seconds: float) -> int:
        """Move time forward, firing due timers in order; returns how many fired."""
        target = self._now + seconds
        fired = 0
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                fired += 1
                timer.callback()
        self._now = target
        return fired


class VirtualClock:
    """Virtual time for a backtest: it moves only when the data or the modelled work moves it.

    ``now()`` counts seconds from ``origin`` (the first tick's epoch second, kept small so
    microsecond step charges stay exact in a float) and ``wall()`` is ``origin + now()``: the
    data's own epoch time, which is what the risk rate window and fill timestamps read.

    Time advances three ways, all deterministic: a data feeder moves it to the next tick's
    timestamp (:meth:`advance_to`); an inline step charges its modelled duration
    (:meth:`charge`: the loop was blocked that long); and a :class:`VirtualTimeLoop` with
    nothing ready jumps it to its earliest timer. Timers are the loop's own, so
    ``call_later``, ``asyncio.sleep`` and ``asyncio.timeout`` all follow virtual time.
    """

    __slots__ = ("_loop", "origin", "t")

    def __init__(self, origin: float = 0.0) -> None:
        self.origin = float(origin)
        self.t = 0.0
        self._loop: VirtualTimeLoop | None = None

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.origin + self.t

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        loop = self._loop
        if loop is None:
            raise RuntimeError("a VirtualClock's timers need its loop: run under clock.new_loop()")
        return loop.call_later(delay, callback)

    def advance_to(self, t: float) -> None:
        """Move to ``t`` (seconds after ``origin``); time never goes back."""
        if t > self.t:
            self.t = t

    def charge(self, seconds: float) -> None:
        """Account for work that held the loop for ``seconds`` of virtual time."""
        self.t += seconds

    def new_loop(self) -> VirtualTimeLoop:
        """An event loop whose time is this clock (one per clock)."""
        loop = VirtualTimeLoop(self)
        self._loop = loop
        return loop


class _VirtualSelector:
    """Wraps a real selector: I/O is polled without blocking, and a wait for a timer becomes
    a jump of virtual time to that timer."""

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._selector = selector
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._selector.select(0)
        if events or timeout == 0:
            return events
        # The loop found nothing ready and computed how long to wait for its earliest timer
        # (cancelled ones are already popped off the head): that wait takes no real time.
        scheduled = self._loop._scheduled  # type: ignore[attr-defined]
        if scheduled:
            clock = self._loop.clock
            # To the timer exactly; never further than the loop asked (it caps its wait at a
            # day), so a timer at infinity cannot take the clock there.
            target = scheduled[0].when()
            if timeout is not None:
                target = min(target, clock.t + timeout)
            clock.advance_to(target)
            return events
        # No timer at all: only I/O (a thread's result, a signal) can wake the loop, so wait
        # for it for real.
        return self._selector.select(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a :class:`VirtualClock`: never sleeps for a timer, jumps to it.

    CPython's pure-Python loop (uvloop's time cannot be replaced). Code that waits for real
    I/O or threads still works, but how much virtual time passes meanwhile is not defined:
    a backtest runs its steps on the loop thread for that reason.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        selector = _VirtualSelector(selectors.DefaultSelector(), self)
        super().__init__(selector)  # type: ignore[arg-type]
        # Virtual time starts at 0, so a nanosecond is far above the float's resolution and a
        # timer due "now" is always taken (the loop compares ``when < now + resolution``).
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.clock.t

    def idle_until(self, t: float) -> bool:
        """Whether nothing is ready to run and no timer is due by ``t``: a feeder may then move
        the clock to ``t`` itself instead of sleeping through the loop."""
        if self._ready:  # type: ignore[attr-defined]
            return False
        scheduled = self._scheduled  # type: ignore[attr-defined]
        return not scheduled or scheduled[0].when() > t
