"""Latency histogram, fake clock and JSON log formatter."""

from __future__ import annotations

import logging
import random

import orjson
import pytest

from engine.clock import FakeClock
from engine.latency import LatencyHistogram
from engine.logs import JsonFormatter


def test_histogram_quantiles_are_within_bucket_resolution() -> None:
    rng = random.Random(4)
    samples = [rng.lognormvariate(-9, 1.5) for _ in range(20_000)]
    h = LatencyHistogram()
    for s in samples:
        h.record(s)
    samples.sort()
    for q in (0.5, 0.99, 0.999):
        exact = samples[int(q * len(samples)) - 1]
        assert exact <= h.quantile(q) <= exact * 1.05  # 16 buckets per octave: ~4.4%
    assert h.quantile(1.0) == h.max == samples[-1]
    assert h.count == len(samples)


def test_histogram_empty_and_bad_quantile() -> None:
    h = LatencyHistogram()
    assert h.quantile(0.99) == 0.0
    assert h.summary()["count"] == 0
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\]"):
        h.quantile(1.5)
    h.record(0.0)
    assert h.quantile(0.5) == 0.0


def test_fake_clock_fires_timers_in_order_and_skips_cancelled() -> None:
    clock = FakeClock(start=10.0)
    fired: list[str] = []
    clock.call_later(2.0, lambda: fired.append("b"))
    clock.call_later(1.0, lambda: fired.append("a"))
    clock.call_later(1.5, lambda: fired.append("x")).cancel()
    assert clock.pending() == 2
    assert clock.advance(0.5) == 0
    assert clock.advance(2.0) == 2
    assert fired == ["a", "b"]
    assert clock.now() == 12.5


def test_json_formatter_keeps_extra_fields() -> None:
    record = logging.LogRecord("tickflow.x", logging.INFO, __file__, 1, "hello %s", ("w",), None)
    record.reason = "oversized"
    out = orjson.loads(JsonFormatter().format(record))
    assert out["msg"] == "hello w"
    assert out["level"] == "info"
    assert out["reason"] == "oversized"


def test_loop_clock_resolves_microseconds_under_uvloop() -> None:
    import asyncio

    import uvloop

    from engine.clock import LoopClock

    async def distinct_readings() -> int:
        clock = LoopClock()
        readings = {clock.now() for _ in range(1000)}
        return len(readings)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        # libuv's cached loop time would give one value for all 1000 reads.
        assert runner.run(distinct_readings()) > 100
