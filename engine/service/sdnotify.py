"""systemd's notify protocol (``sd_notify(3)``) from the standard library.

A notification is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract name written ``@name``). Without that variable every
call is a no-op, so the daemon behaves the same outside systemd.

:meth:`Notifier.run` is the watchdog: it must run as a task **on the engine's event loop**. It
pings ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` only when the loop gets round to it, so a
loop blocked by a runaway inline action or a blocking call stops the pings and systemd restarts
the service (``WatchdogSec=`` in the unit). A thread would keep pinging for a wedged loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

__all__ = ["Notifier", "monotonic_usec", "watchdog_interval"]

log = logging.getLogger("tickflow.sdnotify")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: what systemd expects in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when off.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child that
    inherited the environment must not ping on its parent's behalf.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 2_000_000


def _address(raw: str) -> str | bytes | None:
    if not raw:
        return None
    if raw.startswith("@"):
        # Linux abstract namespace: a leading NUL byte instead of systemd's '@' notation.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    log.warning("NOTIFY_SOCKET %r is neither a path nor @abstract: ignored", raw)
    return None


class Notifier:
    """Sends notifications to ``$NOTIFY_SOCKET`` (or ``address``); a no-op without one.

    Close it (or use it as a context manager): it owns one unbound datagram socket.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        watchdog_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        raw = address if address is not None else env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw)
        self.watchdog_s = watchdog_s if watchdog_s is not None else watchdog_interval(env)
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A notification must never stall the loop; a full socket buffer drops it instead.
            self._sock.setblocking(False)
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ...) as one datagram; False if off or it failed."""
        sock = self._sock
        if sock is None or self._address is None:
            return False
        data = "\n".join(fields).encode()
        try:
            sock.sendto(data, self._address)
        except OSError as exc:
            # systemd gone, socket buffer full: the daemon itself must keep going.
            self.failed += 1
            log.debug("sd_notify failed: %s", exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *((f"STATUS={status}",) if status else ()))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (notify-reload) tell this reload from an earlier one.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *((f"STATUS={status}",) if status else ()))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def run(
        self,
        status: Callable[[], str] | None = None,
        *,
        status_interval_s: float = 5.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Ping the watchdog and refresh ``STATUS=`` until cancelled (run it on the engine loop).

        Returns at once when there is nothing to do (no socket, or neither a watchdog nor a
        status callback). ``clock``/``sleep`` (default: the loop's) are for tests that drive the
        cadence on a fake clock.
        """
        if not self.enabled or (self.watchdog_s is None and status is None):
            return
        time_now = clock if clock is not None else asyncio.get_running_loop().time
        now = time_now()
        next_ping = now if self.watchdog_s is not None else float("inf")
        next_status = now if status is not None else float("inf")
        while True:
            now = time_now()
            if now >= next_ping and self.watchdog_s is not None:
                self.watchdog()
                # From "now", not from the schedule: after a stall, no burst of catch-up pings.
                next_ping = now + self.watchdog_s
            if now >= next_status and status is not None:
                self.status(status())
                next_status = now + status_interval_s
            await sleep(max(0.0, min(next_ping, next_status) - time_now()))

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
