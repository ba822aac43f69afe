"""engine.service.sdnotify: datagrams to a fake $NOTIFY_SOCKET, watchdog cadence, a blocked loop."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator

import pytest

from engine.service.sdnotify import Notifier, monotonic_usec, watchdog_interval
from tests.integration.service_support import NotifySink, wait_until


@pytest.fixture(params=["path", "abstract"])
def sink(request: pytest.FixtureRequest) -> Iterator[NotifySink]:
    s = NotifySink(abstract=request.param == "abstract")
    try:
        yield s
    finally:
        s.close()


def test_messages_reach_the_socket(sink: NotifySink) -> None:
    with Notifier(env={"NOTIFY_SOCKET": sink.address}) as notifier:
        assert notifier.enabled
        assert notifier.ready("up")
        assert notifier.reloading()
        assert notifier.status("10 events/s")
        assert notifier.stopping()
        wait_until(lambda: len(sink.snapshot()) == 4, "four datagrams", timeout=5)
    messages = [m for _, m in sink.snapshot()]
    assert messages[0] == {"READY": "1", "STATUS": "up"}
    assert messages[1]["RELOADING"] == "1"
    assert 0 < int(messages[1]["MONOTONIC_USEC"]) <= monotonic_usec()
    assert messages[2] == {"STATUS": "10 events/s"}
    assert messages[3] == {"STOPPING": "1"}


def test_without_notify_socket_everything_is_a_no_op() -> None:
    with Notifier(env={}) as notifier:
        assert not notifier.enabled
        assert not notifier.ready()
        assert not notifier.watchdog()

        async def main() -> None:
            await notifier.run(lambda: "x")  # returns at once: nothing to do

        asyncio.run(main())


def test_a_vanished_socket_does_not_raise() -> None:
    with Notifier("/nonexistent/notify-socket") as notifier:
        assert notifier.enabled
        assert not notifier.ready()
        assert notifier.failed == 1


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "nope"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 1.0


def _busy(seconds: float) -> None:
    """Hold the event loop like a runaway inline action (a synchronous busy call)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_pings_at_half_the_watchdog_period_and_stop_while_the_loop_is_blocked(
    sink: NotifySink,
) -> None:
    env = {"NOTIFY_SOCKET": sink.address, "WATCHDOG_USEC": "100000"}  # ping every 50 ms
    block_s = 0.6

    async def main() -> tuple[float, float]:
        with Notifier(env=env) as notifier:
            assert notifier.watchdog_s == pytest.approx(0.05)
            task = asyncio.create_task(notifier.run())
            try:
                for _ in range(2000):  # bounded: until five pings arrived
                    if len(sink.with_key("WATCHDOG")) >= 5:
                        break
                    await asyncio.sleep(0.01)
                blocked_at = time.monotonic()
                _busy(block_s)
                unblocked_at = time.monotonic()
                for _ in range(2000):  # bounded: until a ping after the block
                    if any(at > unblocked_at for at, _ in sink.with_key("WATCHDOG")):
                        break
                    await asyncio.sleep(0.01)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            return blocked_at, unblocked_at

    blocked_at, unblocked_at = asyncio.run(main())
    pings = [at for at, _ in sink.with_key("WATCHDOG")]
    before = [at for at in pings if at <= blocked_at]
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert len(gaps) >= 4
    assert all(0.03 <= g <= 0.2 for g in gaps), gaps
    # Nothing while the loop was blocked (10 ms slack for a datagram in flight at the start).
    during = [at for at in pings if blocked_at + 0.01 < at < unblocked_at]
    assert during == [], during
    after = [at for at in pings if at >= unblocked_at]
    assert after
    # ...and no burst of catch-up pings afterwards: one, then the normal cadence.
    assert len([at for at in after if at < unblocked_at + 0.03]) <= 1


def test_status_lines_are_refreshed(sink: NotifySink) -> None:
    calls = itertools.count(1)

    async def main() -> None:
        with Notifier(env={"NOTIFY_SOCKET": sink.address}) as notifier:
            task = asyncio.create_task(
                notifier.run(lambda: f"line {next(calls)}", status_interval_s=0.02)
            )
            try:
                for _ in range(2000):  # bounded
                    if len(sink.with_key("STATUS")) >= 3:
                        break
                    await asyncio.sleep(0.01)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(main())
    texts = [m["STATUS"] for _, m in sink.with_key("STATUS")]
    assert texts[:3] == ["line 1", "line 2", "line 3"]
    assert not sink.with_key("WATCHDOG")  # no WATCHDOG_USEC: no pings
