"""The project's one rate-limited logger: a flood of one kind of line must neither fill the
journal nor hide a different problem.

:class:`RateLimitedLog` gives each key (a reject reason, an intake condition, a third-party
logger's message template) a budget of ``limit`` lines per ``interval`` seconds. What is held
back is counted and reported in one summary line when the key's next window opens (or on
:meth:`RateLimitedLog.flush`). :class:`RateLimitFilter` applies the same budget to records of
loggers the project does not own (aiohttp, asyncio): it cannot write a summary line of its own,
so the first line admitted after a suppression carries the held-back count as a field.

Stdlib only, so the intake (below the service layer) and the service layer can both use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["RateLimitFilter", "RateLimitedLog"]


class _Window:
    __slots__ = ("logged", "started", "suppressed", "suppressed_total")

    def __init__(self, started: float) -> None:
        self.started = started
        self.logged = 0
        self.suppressed = 0
        self.suppressed_total = 0


class RateLimitedLog:
    """At most ``limit`` lines per ``interval`` seconds per key, written to ``logger``.

    ``key_field`` names the extra field that carries the key on every line (so a log query can
    group by it); ``what`` is the plural noun of the summary line ("suppressed 3 more 'idle'
    messages in the last 10.0 s").
    """

    __slots__ = ("_clock", "_interval", "_key_field", "_limit", "_logger", "_what", "_windows")

    def __init__(
        self,
        logger: logging.Logger,
        limit: int = 10,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        key_field: str = "event",
        what: str = "messages",
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self._logger = logger
        self._limit = limit
        self._interval = interval
        self._clock = clock
        self._key_field = key_field
        self._what = what
        self._windows: dict[str, _Window] = {}

    def admit(self, key: str) -> int | None:
        """None when ``key`` is over budget (the line is counted as held back); otherwise the
        number held back in the key's previous window that nobody has reported yet (then
        reported: the caller says so)."""
        now = self._clock()
        window = self._windows.get(key)
        unreported = 0
        if window is None:
            window = self._windows[key] = _Window(now)
        elif now - window.started >= self._interval:
            unreported = window.suppressed
            window.started, window.logged, window.suppressed = now, 0, 0
        if window.logged >= self._limit:
            window.suppressed += 1
            window.suppressed_total += 1
            return None
        window.logged += 1
        return unreported

    def log(
        self,
        level: int,
        key: str,
        msg: str,
        *args: object,
        extra: Mapping[str, Any] | None = None,
        exc_info: Any = None,
    ) -> bool:
        """Log unless ``key`` is over budget; True when the line was written."""
        window = self._windows.get(key)
        previous_start = window.started if window is not None else 0.0
        unreported = self.admit(key)
        if unreported is None:
            return False
        if unreported:
            self._summary(key, unreported, self._clock() - previous_start)
        fields = {self._key_field: key, **(extra or {})}
        self._logger.log(level, msg, *args, extra=fields, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: object, **extra: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args, extra=extra)

    def error(self, key: str, msg: str, *args: object, **extra: Any) -> bool:
        return self.log(logging.ERROR, key, msg, *args, extra=extra)

    def flush(self) -> None:
        """Write the pending summaries now (a source finished, the daemon stops)."""
        now = self._clock()
        for key, window in self._windows.items():
            if window.suppressed:
                self._summary(key, window.suppressed, now - window.started)
                window.suppressed = 0

    def suppressed(self) -> Mapping[str, int]:
        """Lines held back so far, by key (cumulative)."""
        return MappingProxyType(
            {key: window.suppressed_total for key, window in self._windows.items()}
        )

    def _summary(self, key: str, count: int, seconds: float) -> None:
        self._logger.warning(
            "suppressed %d more %r %s in the last %.1f s",
            count, key, self._what, seconds,
            extra={self._key_field: key, "suppressed": count},
        )


class RateLimitFilter(logging.Filter):
    """A handler filter that rate-limits records of loggers outside ``tickflow``.

    The project's own code rate-limits where it knows the key (:class:`RateLimitedLog`); a
    library's error, e.g. aiohttp's "Error handling request" for every malformed request of a
    flood, is keyed by logger and message template. Records below WARNING pass untouched.
    """

    def __init__(
        self,
        limit: int = 10,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        own_prefix: str = "tickflow",
    ) -> None:
        super().__init__()
        # Only its budget is used: admit() never writes.
        self._budget = RateLimitedLog(logging.getLogger(__name__), limit, interval, clock=clock)
        self._own = own_prefix

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if record.levelno < logging.WARNING or name == self._own or name.startswith(
            self._own + "."
        ):
            return True
        unreported = self._budget.admit(f"{name}:{record.msg}")
        if unreported is None:
            return False
        if unreported:
            record.suppressed_before = unreported
        return True

    def suppressed(self) -> Mapping[str, int]:
        return self._budget.suppressed()
