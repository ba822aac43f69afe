"""``tickflow top``: a live full-screen view of a running daemon, read from its ``GET /status``.

Every ``interval`` seconds the view fetches the document again; rates (events/s, runs/s,
fills/s, commits/s) are the difference of the last two documents over the time between the
fetches. Latency quantiles are the daemon's cumulative ones (since its start). A daemon that
does not answer is a message on the screen and another try at the next tick, never a crash.
``q`` quits (exit 0); so does Ctrl-C (exit 130). rich draws the screen; this module writes no
escape code of its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import IO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from engine.service.console import (
    Rates,
    format_count,
    format_money,
    format_seconds,
    run_latency,
)
from engine.service.status import StatusDocument, StatusUnavailable, fetch_status

__all__ = ["TopView", "run_top"]

MAX_POSITIONS = 8  # the largest by notional; the rest is one "and N more" line


def _clean(value: object) -> str:
    """Names come from the daemon (symbols, workflows): never let one drive the terminal."""
    text = str(value)
    return text if text.isprintable() else "".join(
        ch if ch.isprintable() else repr(ch)[1:-1] for ch in text
    )


def _rate(value: float | None) -> str:
    return "-" if value is None else format_count(value)


class TopView:
    """The screen's state: the last two documents (for rates) or the last error."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._clock = clock
        self.doc: StatusDocument | None = None
        self.prev: StatusDocument | None = None
        self.elapsed = 0.0
        self._at = 0.0
        self.error: str | None = None
        self.updated = 0.0  # wall time of the last good document
        self.failures = 0

    def update(self, doc: StatusDocument | None, error: str | None = None) -> None:
        """Take a new document, or the reason there is none."""
        now = self._clock()
        if doc is None:
            self.error = error or "no answer"
            self.failures += 1
            # Rates after an outage must not span it (a restart resets the counters).
            self.prev = None
            self.doc = None
            return
        self.prev, self.doc = self.doc, doc
        self.elapsed = now - self._at if self.prev is not None else 0.0
        self._at = now
        self.error = None
        self.failures = 0
        self.updated = time.time()

    def poll(self, fetch: Callable[[str], StatusDocument]) -> None:
        try:
            doc = fetch(self.url)
        except StatusUnavailable as exc:
            self.update(None, str(exc))
        else:
            self.update(doc)

    # -- rendering --------------------------------------------------------------------------

    def render(self) -> RenderableType:
        if self.doc is None:
            return self._render_down()
        doc = self.doc
        rates = Rates(self.prev, doc, self.elapsed)
        return Group(
            self._header(doc),
            self._workflows(doc, rates),
            self._middle(doc, rates),
            self._positions(doc),
            Text("q quits · rates over the last interval · latency since daemon start",
                 style="dim"),
        )

    def _render_down(self) -> RenderableType:
        body = Text()
        body.append(f"tickflow top: no daemon answers at {self.url}\n", style="bold red")
        body.append(f"{self.error}\n")
        body.append(f"retrying (attempt {self.failures}) · q quits", style="dim")
        return Panel(body, title="tickflow top", border_style="red")

    def _header(self, doc: StatusDocument) -> Text:
        line = Text()
        line.append("tickflow ", style="bold")
        line.append(f"{_clean(doc.version)} at {self.url}  ")
        if doc.ready:
            line.append("● ready", style="bold green")
        else:
            line.append(f"● {_clean(doc.ready_reason)}", style="bold yellow")
        line.append(f"  config {_clean(doc.config_version or '-')}")
        stamp = time.strftime("%H:%M:%S", time.localtime(self.updated))
        line.append(f"  updated {stamp}", style="dim")
        return line

    def _workflows(self, doc: StatusDocument, rates: Rates) -> Table:
        table = Table(title="workflows", title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        for column, justify in (
            ("workflow", "left"), ("state", "left"), ("prio", "right"), ("runs/s", "right"),
            ("done", "right"), ("failed", "right"), ("p50", "right"), ("p99", "right"),
            ("queued", "right"), ("running", "right"),
        ):
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for name, wf in sorted(doc.workflows.items()):
            outcomes = doc.runs.get(name, {})
            state = "paused" if wf.paused else "active"
            table.add_row(
                Text(_clean(name), style="cyan"),
                Text(state, style="yellow" if wf.paused else "green"),
                str(wf.priority),
                _rate(rates.runs(name)),
                format_count(outcomes.get("completed", 0)),
                format_count(outcomes.get("failed", 0)),
                format_seconds(run_latency(doc, name, "p50_s")),
                format_seconds(run_latency(doc, name, "p99_s")),
                str(wf.queued),
                f"{wf.running}/{wf.max_concurrent}",
            )
        return table

    def _middle(self, doc: StatusDocument, rates: Rates) -> Table:
        """Agents and queue, intake, storage: three small panels side by side."""
        queue, agents, events = doc.queue, doc.agents, doc.events
        left = Text()
        left.append(f"agents   {agents.busy}/{agents.total} busy\n")
        left.append(f"queue    {queue.depth}/{queue.capacity}\n")
        by_prio = queue.depth_by_priority
        prios = " ".join(f"p{p}:{n}" for p, n in sorted(by_prio.items(), key=lambda i: int(i[0])))
        left.append(f"by prio  {prios or '-'}\n")
        left.append(f"in flight {doc.runs_in_flight}")

        rejected = events.rejected
        intake = Text()
        intake.append(f"events/s  {_rate(rates.events)}\n", style="bold")
        intake.append(f"received  {format_count(sum(events.received.values()))}\n")
        worst = ", ".join(f"{_clean(k)} {v}" for k, v in sorted(
            rejected.items(), key=lambda i: -i[1])[:2] if v)
        intake.append(f"rejected  {format_count(sum(rejected.values()))}"
                      f"{f' ({worst})' if worst else ''}\n")
        intake.append(f"conflated {format_count(events.conflated)}  "
                      f"shed {format_count(events.shed)}")

        storage = doc.storage
        store = Text()
        if storage is not None:
            store.append(f"backlog   {storage.backlog}\n",
                         style="bold yellow" if storage.backlog else "")
            store.append(f"commits/s {_rate(rates.commits)}\n")
            store.append(f"commits   {format_count(storage.commits)}\n")
            store.append(f"records   {format_count(storage.records)}")
        else:
            store.append("off (no state database)", style="dim")

        grid = Table.grid(expand=True, padding=(0, 1))
        for _ in range(3):
            grid.add_column(ratio=1)
        grid.add_row(
            Panel(left, title="agents & queue", title_align="left"),
            Panel(intake, title="intake", title_align="left"),
            Panel(store, title="storage", title_align="left"),
        )
        return grid

    def _positions(self, doc: StatusDocument) -> RenderableType:
        pnl = doc.pnl
        net = pnl.net
        head = Text()
        head.append(f"fills {format_count(doc.orders.fills)}  ")
        head.append("P&L ")
        head.append(format_money(net), style="bold green" if net >= 0 else "bold red")
        head.append(f"  realised {format_money(pnl.realized)}"
                    f"  unrealised {format_money(pnl.unrealized)}"
                    f"  fees {pnl.fees:,.2f}"
                    f"  equity {pnl.equity:,.2f}")
        positions = [p for p in doc.positions.values() if p.qty]
        positions.sort(key=lambda p: -abs(p.qty * p.avg_cost))
        table = Table(box=box.SIMPLE_HEAD, expand=True)
        for column in ("symbol", "qty", "avg cost", "realised"):
            table.add_column(column, justify="left" if column == "symbol" else "right")
        for p in positions[:MAX_POSITIONS]:
            realized = p.realized_pnl
            table.add_row(
                _clean(p.symbol),
                format_count(p.qty),
                f"{p.avg_cost:,.2f}",
                Text(format_money(realized), style="green" if realized >= 0 else "red"),
            )
        parts: list[RenderableType] = [head, table]
        if len(positions) > MAX_POSITIONS:
            parts.append(Text(f"and {len(positions) - MAX_POSITIONS} more", style="dim"))
        if not positions:
            parts = [head, Text("no open positions", style="dim")]
        return Panel(Group(*parts), title="positions & P&L", title_align="left")


@contextlib.contextmanager
def _keys(stream: IO[str]) -> Iterator[Callable[[float], str]]:
    """A ``wait(timeout) -> key`` reader: the terminal in cbreak mode (one key at a time, no
    echo; Ctrl-C still interrupts), restored on exit. Off a terminal it only waits."""
    try:
        fd = stream.fileno()
        interactive = os.isatty(fd)
    except (OSError, ValueError):
        fd, interactive = -1, False
    if not interactive:
        def wait(timeout: float) -> str:
            time.sleep(timeout)  # nothing to read: the refresh period elapses
            return ""

        yield wait
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        def wait(timeout: float) -> str:
            ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
            if not ready:
                return ""
            data = os.read(fd, 32)
            return data.decode("utf-8", "replace") if data else "q"  # EOF: nobody to watch

        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_top(
    url: str,
    interval_s: float = 1.0,
    *,
    count: int | None = None,
    console: Console | None = None,
    keys: IO[str] | None = None,
    fetch: Callable[[str], StatusDocument] = fetch_status,
) -> int:
    """Show the view until ``q`` (0), Ctrl-C (130) or ``count`` refreshes (0)."""
    if not (interval_s > 0 and math.isfinite(interval_s)):
        raise ValueError("--interval must be a positive number of seconds")
    console = console if console is not None else Console()
    view = TopView(url)
    view.poll(fetch)
    refreshes = 1
    try:
        with _keys(keys if keys is not None else sys.stdin) as wait, Live(
            view.render(), console=console, screen=console.is_terminal,
            auto_refresh=False, redirect_stdout=False, redirect_stderr=False,
        ) as live:
            deadline = time.monotonic() + interval_s
            while count is None or refreshes < count:
                key = wait(deadline - time.monotonic())
                if key and key[-1] in "qQ":
                    return 0
                if time.monotonic() < deadline:
                    continue  # another key: ignored, keep waiting for the tick
                deadline = time.monotonic() + interval_s
                view.poll(fetch)
                refreshes += 1
                live.update(view.render(), refresh=True)
    except KeyboardInterrupt:
        return 130
    return 0
