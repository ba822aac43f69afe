"""What a person at a terminal sees while ``tickflow run`` works: a status line kept below the
scrolling log lines, refreshed every few seconds.

Everything shown comes from the status document (engine/service/status.py: ``GET /status``),
the same one ``tickflow top`` reads over HTTP: rates are differences of two documents over the
time between them, never counters poked out of the engine. Shared by engine/service/top.py:
:class:`Rates` and the number formatters.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping

from rich.console import Console
from rich.live import Live
from rich.text import Text

from engine.service.status import StatusDocument

__all__ = [
    "FINISHED",
    "Rates",
    "StatusLine",
    "format_count",
    "format_money",
    "format_seconds",
    "run_latency",
    "status_segments",
    "status_text",
]

# Run outcomes that end a run (shed runs never started: not throughput).
FINISHED = ("completed", "failed", "cancelled")


def format_seconds(value: float | None) -> str:
    """A latency for a person: µs below 1 ms, ms below 1 s; "-" when there is none."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f}µs"
    if value < 1.0:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def format_count(value: float) -> str:
    """1234 -> "1,234"; 12345678 -> "12.3M" (fits a narrow column)."""
    if not math.isfinite(value):
        return "-"
    if abs(value) >= 1e7:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def format_money(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:+,.2f}"


def _total(counts: Mapping[str, int] | None) -> int:
    return sum(counts.values()) if counts else 0


def _finished(outcomes: Mapping[str, int] | None) -> int:
    return sum(outcomes.get(o, 0) for o in FINISHED) if outcomes else 0


class Rates:
    """Per-second rates between two status documents ``elapsed_s`` apart.

    Without a previous document (the first sample) every rate is None: a rate since start
    would be a misleading average for a daemon that has been running for hours.
    """

    def __init__(
        self, prev: StatusDocument | None, cur: StatusDocument, elapsed_s: float
    ) -> None:
        self.known = prev is not None and elapsed_s > 0
        self._prev = prev or StatusDocument()
        self._cur = cur
        self._elapsed = elapsed_s

    def _rate(self, before: float, after: float) -> float | None:
        if not self.known:
            return None
        # A restarted daemon behind the same URL starts its counters at zero again.
        return max(after - before, 0) / self._elapsed

    @property
    def events(self) -> float | None:
        return self._rate(
            _total(self._prev.events.received), _total(self._cur.events.received)
        )

    def runs(self, workflow: str) -> float | None:
        return self._rate(
            _finished(self._prev.runs.get(workflow)), _finished(self._cur.runs.get(workflow))
        )

    @property
    def fills(self) -> float | None:
        return self._rate(self._prev.orders.fills, self._cur.orders.fills)

    @property
    def commits(self) -> float | None:
        before, after = self._prev.storage, self._cur.storage
        return self._rate(
            before.commits if before is not None else 0, after.commits if after is not None else 0
        )


def _rate_text(value: float | None) -> str:
    return "-" if value is None else format_count(value)


def run_latency(doc: StatusDocument, workflow: str, quantile: str = "p99_s") -> float | None:
    summary = doc.latency.run.get(workflow)
    if not summary or not summary.get("count"):
        return None
    value = summary.get(quantile)
    return float(value) if value is not None else None


def status_segments(doc: StatusDocument, rates: Rates) -> list[Text]:
    """The status line's parts: state and events/s, each workflow's runs/s and p99, queue and
    agents, fills and P&L."""
    state = "ready" if doc.ready else doc.ready_reason
    head = Text()
    head.append(f"● {state} ", style="bold green" if doc.ready else "bold yellow")
    head.append(f"{_rate_text(rates.events)} ev/s", style="bold")
    parts = [head]
    for name in sorted(doc.workflows):
        part = Text()
        part.append(f"{name} ", style="cyan")
        part.append(f"{_rate_text(rates.runs(name))} runs/s")
        part.append(f" p99 {format_seconds(run_latency(doc, name))}", style="dim")
        parts.append(part)
    parts.append(Text(f"queue {doc.queue.depth}  agents {doc.agents.busy}/{doc.agents.total}"))
    net = doc.pnl.net
    money = Text(f"fills {doc.orders.fills}  P&L ")
    money.append(format_money(net), style="green" if net >= 0 else "red")
    parts.append(money)
    return parts


_SEPARATOR = "  │ "


def status_text(doc: StatusDocument, rates: Rates, width: int | None = None) -> Text:
    """The status as one line, or as few lines of at most ``width`` cells as it takes: a part
    is never cut (a narrow terminal gets two lines, not an ellipsis over the P&L)."""
    lines: list[Text] = []
    for part in status_segments(doc, rates):
        if lines and (width is None or lines[-1].cell_len + len(_SEPARATOR) + part.cell_len
                      <= width):
            lines[-1].append(_SEPARATOR, style="dim")
            lines[-1].append_text(part)
        else:
            lines.append(part.copy())
    out = Text("\n").join(lines)
    out.no_wrap, out.overflow = True, "ellipsis"  # a part wider than the terminal
    return out


class StatusLine:
    """Samples the status document every ``interval_s`` and shows it as a live line on
    ``console`` (the log handler's console, so log lines scroll above it)."""

    def __init__(
        self,
        console: Console,
        snapshot: Callable[[], StatusDocument],
        *,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        self.console = console
        self.snapshot = snapshot
        self.interval_s = interval_s
        self._clock = clock
        self._prev: StatusDocument | None = None
        self._prev_at = 0.0

    def sample(self) -> Text:
        """The next line: the current document against the previous sample."""
        now = self._clock()
        doc = self.snapshot()
        rates = Rates(self._prev, doc, now - self._prev_at)
        self._prev, self._prev_at = doc, now
        return status_text(doc, rates, self.console.width)

    async def run(self) -> None:
        """Refresh until cancelled; the line is removed on exit (the drain logs follow)."""
        live = Live(
            self.sample(), console=self.console, auto_refresh=False, transient=True,
            redirect_stdout=False, redirect_stderr=False,
        )
        live.start(refresh=True)
        try:
            while True:
                await asyncio.sleep(self.interval_s)  # a display period, not a wait
                live.update(self.sample(), refresh=True)
        finally:
            with contextlib.suppress(Exception):  # a closed terminal must not mask the exit
                live.stop()
