"""Latency histogram, fake clock and JSON log formatter."""

from __future__ import annotations

import logging
import random
from types import ModuleType

import orjson
import pytest

from engine.core.clock import FakeClock
from engine.service.logs import JsonFormatter


def test_histogram_quantiles_are_within_bucket_resolution(latency_module: ModuleType) -> None:
    rng = random.Random(4)
    samples = [rng.lognormvariate(-9, 1.5) for _ in range(20_000)]
    h = latency_module.LatencyHistogram()
    for s in samples:
        h.record(s)
    samples.sort()
    for q in (0.5, 0.99, 0.999):
        exact = samples[int(q * len(samples)) - 1]
        assert exact <= h.quantile(q) <= exact * 1.05  # 16 buckets per octave: ~4.4%
    assert h.quantile(1.0) == h.max == samples[-1]
    assert h.count == len(samples)


def test_histogram_empty_and_bad_quantile(latency_module: ModuleType) -> None:
    h = latency_module.LatencyHistogram()
    assert h.quantile(0.99) == 0.0
    assert h.summary()["count"] == 0
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\]"):
        h.quantile(1.5)
    h.record(0.0)
    assert h.quantile(0.5) == 0.0


def test_both_histograms_agree_exactly_and_merge(latency_module: ModuleType) -> None:
    import fastpath._latency_py as twin

    rng = random.Random(9)
    samples = [rng.lognormvariate(-10, 2.0) for _ in range(5000)] + [0.0, 1e-12, 3600.0]
    h, ref = latency_module.LatencyHistogram(), twin.LatencyHistogram()
    for s in samples:
        h.record(s)
        ref.record(s)
    assert h.bucket_counts() == ref.bucket_counts()
    assert (h.count, h.max, h.min) == (ref.count, ref.max, ref.min)
    assert h.total == pytest.approx(ref.total)
    for q in (0.0, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert h.quantile(q) == ref.quantile(q)
    edges = [100, 200, 300, 400]
    assert h.cumulative_counts(edges) == ref.cumulative_counts(edges)
    assert latency_module.bucket_edge_seconds(160) == twin.bucket_edge_seconds(160)
    pooled = latency_module.LatencyHistogram()
    pooled.merge(h)
    pooled.add_buckets(dict(enumerate(ref.bucket_counts())), ref.count, ref.total, ref.max,
                       ref.min)
    assert pooled.count == 2 * h.count
    assert pooled.bucket_counts() == [2 * c for c in h.bucket_counts()]
    with pytest.raises(ValueError, match="bad bucket"):
        pooled.add_buckets({5000: 1}, 1, 0.0, 0.0, 0.0)


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

    from engine.core.clock import LoopClock

    async def distinct_readings() -> int:
        clock = LoopClock()
        readings = {clock.now() for _ in range(1000)}
        return len(readings)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        # libuv's cached loop time would give one value for all 1000 reads.
        assert runner.run(distinct_readings()) > 100


@pytest.mark.parametrize("seconds", [float("inf"), 1e300, float("nan")])
def test_a_sample_past_the_last_bucket_or_not_a_number_stays_in_the_buckets(
    latency_module: ModuleType, seconds: float
) -> None:
    """+inf (a run resumed with a far-off creation time, say) goes to the last bucket, NaN to
    the first, in both twins: the compiled one used to convert +inf to an int and write outside
    its counts."""
    import fastpath._latency_py as twin

    h, ref = latency_module.LatencyHistogram(), twin.LatencyHistogram()
    for hist in (h, ref):
        hist.record(0.001)
        hist.record(seconds)
    counts = h.bucket_counts()
    assert counts == ref.bucket_counts()
    assert sum(counts) == h.count == 2
    assert counts[-1 if seconds == seconds else 0] == 1
