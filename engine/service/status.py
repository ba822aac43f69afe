"""The status document: one type for ``GET /status``, ``tickflow status``, ``tickflow top``,
the terminal status line and ``tickflow run --summary``.

The daemon builds it from its components' ``statistics()`` snapshots (:func:`status_document`);
readers decode the JSON into the same structs (:func:`decode_status`), so a field is named once
and a reader gets a clear error, not a ``KeyError`` three calls deep, from a document that is
not one. Every field has a default: a reader can show a daemon of an older release.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import msgspec

from engine import __version__
from engine.core.errors import TickflowError
from engine.core.orders import Position
from engine.service.reload import ReloadReport
from engine.storage.recovery import RecoveryReport
from engine.storage.writer import WriterStatistics

if TYPE_CHECKING:
    from engine.service.daemon import Engine

__all__ = [
    "AgentStatus",
    "EventCounts",
    "LatencySummary",
    "OrderCounts",
    "Pnl",
    "QueueStatus",
    "StatusDocument",
    "StatusUnavailable",
    "WorkflowStatus",
    "decode_status",
    "fetch_status",
    "format_status",
    "status_document",
]

Quantiles = dict[str, float | int]  # a latency summary: count, mean_s, p50_s, p99_s, ...


class QueueStatus(msgspec.Struct, frozen=True, kw_only=True):
    depth: int = 0
    capacity: int = 0
    depth_by_priority: dict[str, int] = {}
    shed: int = 0


class AgentStatus(msgspec.Struct, frozen=True, kw_only=True):
    total: int = 0
    busy: int = 0


class WorkflowStatus(msgspec.Struct, frozen=True, kw_only=True):
    priority: int = 0
    enabled: bool = True
    max_concurrent: int = 0
    paused: bool = False
    running: int = 0
    queued: int = 0


class EventCounts(msgspec.Struct, frozen=True, kw_only=True):
    received: dict[str, int] = {}
    rejected: dict[str, int] = {}
    conflated: int = 0
    shed: int = 0


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    dispatch_wait: dict[str, Quantiles] = {}
    run: dict[str, Quantiles] = {}
    preemption: Quantiles = {}


class OrderCounts(msgspec.Struct, frozen=True, kw_only=True):
    by_side_and_outcome: dict[str, int] = {}
    submitted: int = 0
    fills: int = 0


class Pnl(msgspec.Struct, frozen=True, kw_only=True):
    cash: float = 0.0
    realized: float = 0.0
    unrealized: float = 0.0
    fees: float = 0.0
    equity: float = 0.0

    @property
    def net(self) -> float:
        """Realised plus unrealised, less fees: what the paper book made since start."""
        return self.realized + self.unrealized - self.fees


class StatusDocument(msgspec.Struct, frozen=True, kw_only=True):
    version: str = ""
    config_version: str = ""
    running: bool = False
    ready: bool = False
    ready_reason: str = "not running"
    queue: QueueStatus = QueueStatus()
    agents: AgentStatus = AgentStatus()
    runs_in_flight: int = 0
    symbols: int = 0
    workflows: dict[str, WorkflowStatus] = {}
    events: EventCounts = EventCounts()
    # per workflow, per outcome (completed, failed, cancelled, shed, ...)
    runs: dict[str, dict[str, int]] = {}
    # per "workflow.step", per outcome
    steps: dict[str, dict[str, int]] = {}
    preemptions: int = 0
    retries: int = 0
    timeouts: int = 0
    # cumulative since start; `tickflow top` and the status line show them
    latency: LatencySummary = LatencySummary()
    orders: OrderCounts = OrderCounts()
    positions: dict[str, Position] = {}
    pnl: Pnl = Pnl()
    storage: WriterStatistics | None = None
    recovery: RecoveryReport | None = None
    reloads: dict[str, int] = {}
    last_reload: ReloadReport | None = None


class StatusUnavailable(TickflowError, OSError):
    """No status document at the URL: down, refusing, or not a tickflow daemon."""


_DECODER = msgspec.json.Decoder(StatusDocument)


def decode_status(body: bytes | str) -> StatusDocument:
    """A status document from its JSON; :class:`StatusUnavailable` saying why it is not one
    (msgspec names the path of the first field that is not what the type says)."""
    try:
        doc = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise StatusUnavailable(
            f"not a tickflow admin API (unexpected /status document: {exc})"
        ) from None
    except msgspec.DecodeError as exc:
        raise StatusUnavailable(f"not a tickflow admin API (status is not JSON: {exc})") from None
    if not doc.version:
        raise StatusUnavailable("not a tickflow admin API (unexpected /status document)")
    return doc


def fetch_status(url: str, timeout: float = 2.0) -> StatusDocument:
    """``GET {url}/status`` of a running daemon; :class:`StatusUnavailable` with the reason."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise StatusUnavailable(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise StatusUnavailable(str(exc.reason)) from None
    except (OSError, ValueError) as exc:  # a reset, a timeout, a malformed URL
        raise StatusUnavailable(str(exc) or type(exc).__name__) from None
    return decode_status(body)


def format_status(doc: StatusDocument, url: str) -> str:
    """``tickflow status`` of a live daemon, as text."""
    queue, agents = doc.queue, doc.agents
    ready = "ready" if doc.ready else doc.ready_reason
    lines = [
        f"tickflow {doc.version} at {url}: {ready}, config {doc.config_version or '-'}",
        f"agents {agents.busy}/{agents.total} busy, runs in flight "
        f"{doc.runs_in_flight}, queue {queue.depth}/{queue.capacity} "
        f"(by priority {queue.depth_by_priority or '{}'}), symbols {doc.symbols}",
        "workflows:",
    ]
    for name, wf in sorted(doc.workflows.items()):
        state = "paused" if wf.paused else "active"
        lines.append(
            f"  {name:<24} {state:<7} priority {wf.priority} max_concurrent "
            f"{wf.max_concurrent} running {wf.running} queued {wf.queued}"
        )
    events = doc.events
    lines.append(
        f"events: received {events.received}, rejected {events.rejected}, "
        f"conflated {events.conflated}, shed {events.shed}"
    )
    if doc.storage is not None:
        st = doc.storage
        lines.append(
            f"storage: {st.commits} commits, {st.records} records, backlog {st.backlog}"
        )
    if doc.reloads:
        lines.append(f"config reloads: {doc.reloads}")
    return "\n".join(lines)


def status_document(engine: Engine) -> StatusDocument:
    """A snapshot of ``engine``, from its components' ``statistics()``."""
    stats = engine.statistics()
    c = stats.counters
    queue = stats.queue
    lanes = engine.queue.lanes
    ok, reason = engine.readiness()
    workflows = {}
    for name, wf in engine.workflows.items():
        lane = lanes.get(name)
        workflows[name] = WorkflowStatus(
            priority=wf.priority,
            enabled=wf.enabled,
            max_concurrent=lane.max_concurrent if lane else wf.max_concurrent,
            paused=bool(lane and lane.paused),
            running=queue.running_by_workflow.get(name, 0),
            queued=queue.depth_by_workflow.get(name, 0),
        )
    marks = {s.name: s.last_tick.price for s in engine.symbols if s.last_tick is not None}
    broker = engine.broker.statistics(marks)
    persistence = engine.persistence
    reloader = engine.reloader
    return StatusDocument(
        version=__version__,
        config_version=engine.config_version,
        running=engine.running,
        ready=ok,
        ready_reason=reason,
        queue=QueueStatus(
            depth=queue.size,
            capacity=queue.capacity,
            depth_by_priority={str(p): n for p, n in queue.depth_by_priority.items()},
            shed=queue.shed,
        ),
        agents=AgentStatus(total=stats.dispatcher.agents, busy=stats.dispatcher.busy),
        runs_in_flight=c.runs_in_flight,
        symbols=stats.symbols,
        workflows=workflows,
        events=EventCounts(
            received=c.events_received,
            rejected=c.events_rejected,
            conflated=c.events_conflated,
            shed=c.events_shed,
        ),
        runs=c.runs,
        steps=c.steps,
        preemptions=c.preemptions,
        retries=c.retries,
        timeouts=c.timeouts,
        latency=LatencySummary(
            dispatch_wait=c.dispatch_wait, run=c.run_latency, preemption=c.preemption_latency
        ),
        orders=OrderCounts(
            by_side_and_outcome=stats.orders, submitted=broker.orders, fills=broker.fills
        ),
        positions={p.symbol: p for p in broker.positions},
        pnl=Pnl(
            cash=broker.cash,
            realized=broker.realized_pnl,
            unrealized=broker.unrealized_pnl,
            fees=broker.fees_paid,
            equity=broker.equity,
        ),
        storage=(
            persistence.writer.statistics()
            if persistence is not None and persistence.writer is not None
            else None
        ),
        recovery=persistence.report if persistence is not None else None,
        reloads=dict(reloader.counts) if reloader is not None else {},
        last_reload=reloader.last if reloader is not None else None,
    )
