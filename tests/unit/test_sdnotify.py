"""engine.service.sdnotify: datagrams to a fake $NOTIFY_SOCKET, watchdog cadence, a blocked loop."""

from __future__ import annotations

import asyncio
import itertools
import os
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


class _Stop(Exception):
    """Ends a fake-clock run after a fixed number of sleeps."""


def test_pings_at_half_the_watchdog_period_and_no_burst_after_a_stall(
    sink: NotifySink,
) -> None:
    """The cadence on a fake clock: a ping every half period, and after the loop was held up
    (time jumps 0.6 s inside one sleep, as a blocked loop sees it) one ping, then the normal
    cadence -- no catch-up burst. That pings stop while the loop is blocked follows from their
    being sent by a task on the loop; tests/integration/test_systemd_live.py shows systemd
    restarting a daemon whose loop stopped."""
    env = {"NOTIFY_SOCKET": sink.address, "WATCHDOG_USEC": "100000"}  # ping every 50 ms
    now = [1000.0]
    sent: list[float] = []
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        now[0] += delay
        if len(sleeps) == 5:
            now[0] += 0.6  # the stall
        if len(sleeps) == 10:
            raise _Stop

    async def main() -> None:
        with Notifier(env=env) as notifier:
            assert notifier.watchdog_s == pytest.approx(0.05)
            real_ping = notifier.watchdog

            def ping() -> bool:
                sent.append(now[0])
                return real_ping()

            notifier.watchdog = ping  # type: ignore[method-assign]
            with pytest.raises(_Stop):
                await notifier.run(clock=lambda: now[0], sleep=fake_sleep)

    asyncio.run(main())
    # Every ping reached the socket.
    wait_until(lambda: len(sink.with_key("WATCHDOG")) == len(sent), "the pings", timeout=5)
    assert len(sent) == 10
    gaps = [round(b - a, 9) for a, b in itertools.pairwise(sent)]
    assert gaps == [0.05] * 4 + [0.65] + [0.05] * 4
    assert sleeps == [pytest.approx(0.05)] * 10


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
