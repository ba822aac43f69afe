"""The market flood's workload, the same for both designs: its steps, tick stream and feed.

* :func:`features` and :func:`decide` are the two steps of one workflow per tick (see
  :mod:`benchmarks.market_flood` for why the first suspends); ``decide`` records the staleness
  of every decision in :data:`BOOKS`.
* :class:`TickStream`: 2,000 symbols' ticks drawn from a seed, so both designs get the same.
* :class:`Feed`: the market side of a UDP multicast feed -- a socket buffer that drops what
  arrives while it is full, read a batch at a time.
* :func:`make_subject`: tickflow (:func:`engine_toml`) or the baseline pool on these steps,
  behind :class:`benchmarks.engine_load.Subject`.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Any

from fastpath.latency import LatencyHistogram

from .baseline import BaselinePool, JobSpec
from .engine_load import BaselineSubject, Subject, TickflowSubject
from .workloads import AGENTS, Workload

__all__ = [
    "BOOKS",
    "DESIGNS",
    "PRIORITY",
    "READ_BATCH",
    "SOCKET_TICKS",
    "SYMBOLS",
    "Feed",
    "TickStream",
    "decide",
    "engine_toml",
    "features",
    "make_subject",
    "queued",
]

DESIGNS = ("tickflow", "baseline")
SYMBOLS = 2000
WORKFLOW = "md"
PRIORITY = 2
STREAM_LEN = 1 << 16  # pre-drawn ticks, cycled: the draw is not part of the offered load
# One 64 KiB socket read of ~120-byte DATA_READY lines, as the network intake reads per turn.
READ_BATCH = 512
# A feed handler's socket buffer (SO_RCVBUF of 2 MiB) in ~128-byte ticks.
SOCKET_TICKS = 16_384


# -- the steps (both designs call these very functions) -------------------------------------


class _Books:
    """Per-symbol EMAs and the decisions' staleness; one per process (a child runs one run)."""

    __slots__ = ("decisions", "ema", "staleness")

    def __init__(self) -> None:
        self.ema: dict[str, tuple[float, float]] = {}
        self.staleness = LatencyHistogram()
        self.decisions = [0, 0, 0]  # BUY, SELL, HOLD

    def reset(self) -> None:
        self.staleness = LatencyHistogram()
        self.decisions = [0, 0, 0]


BOOKS = _Books()
FAST, SLOW = 2.0 / (5 + 1), 2.0 / (20 + 1)


async def features(ctx: Any) -> float:
    """Suspend once (an I/O read), then update the symbol's fast/slow EMAs; returns the spread."""
    await asyncio.sleep(0)
    tick = ctx.tick
    price: float = tick.price
    fast, slow = BOOKS.ema.get(tick.symbol, (price, price))
    fast += FAST * (price - fast)
    slow += SLOW * (price - slow)
    BOOKS.ema[tick.symbol] = (fast, slow)
    return (fast - slow) / slow


async def decide(ctx: Any) -> int:
    """BUY (0), SELL (1) or HOLD (2) from the EMA spread; records the tick's age now."""
    tick = ctx.tick
    fast, slow = BOOKS.ema.get(tick.symbol, (tick.price, tick.price))
    spread = (fast - slow) / slow
    action = 0 if spread > 1e-4 else 1 if spread < -1e-4 else 2
    BOOKS.decisions[action] += 1
    BOOKS.staleness.record(time.perf_counter() - tick.ts)
    return action


# -- the designs on this workload -----------------------------------------------------------

ACTIONS = __name__


def engine_toml() -> str:
    """Tickflow with the same options as the engine benchmark: timeouts, a retry, conflation."""
    return f"""
[engine]
agents = {AGENTS}
heap_capacity = 65536
sweep_interval_s = 3600.0
drain_timeout_s = 0.0

[source]
kind = "none"

[workflows.{WORKFLOW}]
priority = {PRIORITY}
route = {{ min_priority = 0 }}
max_concurrent = {AGENTS}
on_busy = "follow_up"

[[workflows.{WORKFLOW}.steps]]
name = "features"
action = "{ACTIONS}:features"
timeout_ms = 1000.0
retry = {{ count = 1 }}

[[workflows.{WORKFLOW}.steps]]
name = "decide"
action = "{ACTIONS}:decide"
depends_on = ["features"]
timeout_ms = 1000.0
"""


class _FloodBaseline(BaselineSubject):
    """The baseline pool (step mode) running :func:`features` then :func:`decide`."""

    def __init__(self) -> None:
        super().__init__(Workload())
        self.pool = BaselinePool([JobSpec(WORKFLOW, (features, decide))], workers=AGENTS)
        self.submit = self.pool.submit

    def queued(self) -> int:
        return self.pool.queued()


def make_subject(design: str) -> Subject:
    if design == "tickflow":
        return TickflowSubject(engine_toml())
    if design == "baseline":
        return _FloodBaseline()
    raise ValueError(f"unknown design {design!r} for the market flood; expected one of {DESIGNS}")


def queued(subject: Subject) -> int:
    """Work waiting at the end: the baseline's queued jobs, or tickflow's runs in its table."""
    if isinstance(subject, _FloodBaseline):
        return subject.queued()
    return subject.in_flight()


# -- the tick stream ------------------------------------------------------------------------


class TickStream:
    """The same ticks for both designs: symbol and price drawn from ``seed``, cycled.

    Activity is skewed as in a real market (symbol k ticks with weight 1/(k+1)^0.8), prices
    walk by 1 bp per tick. ``ts`` is stamped by the caller when the tick is offered."""

    def __init__(self, seed: int, symbols: int = SYMBOLS, length: int = STREAM_LEN) -> None:
        rng = random.Random(seed)
        self.names = [f"M{i:04d}" for i in range(symbols)]
        weights = [1.0 / (k + 1) ** 0.8 for k in range(symbols)]
        self.index = rng.choices(range(symbols), weights=weights, k=length)
        last = [100.0 + (k % 50) for k in range(symbols)]
        self.price: list[float] = []
        for k in self.index:
            last[k] *= 1.0 + rng.gauss(0.0, 1e-4)
            self.price.append(last[k])

    def __len__(self) -> int:
        return len(self.index)


class Feed:
    """The market side of a UDP multicast feed: ticks arrive at ``rate`` per second into a
    socket buffer of ``capacity`` ticks; what arrives while it is full is dropped (counted),
    as the kernel drops datagrams. The reader takes at most ``batch`` per :meth:`read`.

    Ticks are numbered in arrival order; tick ``seq`` is the stream's ``seq % len(stream)``-th
    entry and arrived at ``start + seq / rate``, whichever design reads it."""

    def __init__(self, rate: float, start: float, capacity: int, batch: int) -> None:
        self.rate, self.start, self.capacity, self.batch = rate, start, capacity, batch
        self.ranges: collections.deque[list[int]] = collections.deque()  # [lo, hi) buffered
        self.buffered = self.arrived = self.dropped = self.taken = 0

    def read(self, now: float) -> list[range]:
        """The arrivals up to ``now`` into the buffer, then up to ``batch`` ticks out of it."""
        arrived = int((now - self.start) * self.rate)
        new = arrived - self.arrived
        if new > 0:
            accept = min(new, self.capacity - self.buffered)
            if accept > 0:
                self.ranges.append([self.arrived, self.arrived + accept])
                self.buffered += accept
            self.dropped += new - accept
            self.arrived = arrived
        out: list[range] = []
        budget = self.batch
        while budget and self.ranges:
            span = self.ranges[0]
            m = min(budget, span[1] - span[0])
            out.append(range(span[0], span[0] + m))
            span[0] += m
            budget -= m
            if span[0] == span[1]:
                self.ranges.popleft()
        taken = self.batch - budget
        self.buffered -= taken
        self.taken += taken
        return out
