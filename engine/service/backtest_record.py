"""What a backtest keeps while it runs, and the figures made from it at the end.

The :class:`Recorder` sees every fill (it wraps the broker's ``submit``), every run that ends
(the coordinator's ``on_run_finished``) and the ticks as they are fed. It always keeps the
fills (the digest needs them) and an equity curve on a uniform virtual-time grid (Sharpe and
drawdown need it); price paths and per-run latencies only when a report is asked for.

Memory stays bounded on any input: the equity grid and each price path halve their resolution
when they grow past their cap, so a billion-tick file keeps a few thousand points per series.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from typing import Any, Final

import msgspec
import orjson

from strategies.broker import Fill, PaperBroker

__all__ = ["Figures", "RecordedFill", "Recorder", "result_digest"]

# Points kept per series before its resolution halves.
_EQUITY_POINTS: Final = 4096
_PATH_POINTS: Final = 4096
# Sharpe is annualised over a trading year of 252 sessions of 6.5 hours.
_TRADING_SECONDS_PER_YEAR: Final = 252 * 6.5 * 3600
_SHARPE_MIN_RETURNS: Final = 30


class RecordedFill(msgspec.Struct, frozen=True, array_like=True):
    """One fill as the digest and the report see it (``t``: virtual seconds since the start)."""

    t: float
    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    realized_pnl: float
    position: float  # the symbol's position right after this fill


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """The headline numbers of a backtest (also ``summary.json``'s ``figures``)."""

    pnl: float  # equity at the end minus initial cash, net of fees
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    fills: int
    turnover: float  # traded notional / initial cash
    hit_rate: float | None  # share of position-reducing fills with a positive realised P&L
    max_drawdown: float  # largest fall of equity from a running peak, in cash
    max_drawdown_pct: float
    sharpe: float | None  # annualised, from equity returns on the sampling grid


class _Path:
    """A bounded (t, value) series: keeps every ``stride``-th point, doubling the stride (and
    dropping every other kept point) when it reaches its cap."""

    __slots__ = ("cap", "seen", "stride", "t", "v")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.stride = 1
        self.seen = 0
        self.t: list[float] = []
        self.v: list[float] = []

    def add(self, t: float, v: float) -> None:
        seen = self.seen
        self.seen = seen + 1
        if seen % self.stride:
            return
        self.t.append(t)
        self.v.append(v)
        if len(self.t) >= self.cap:
            del self.t[1::2], self.v[1::2]
            self.stride *= 2


class Recorder:
    """Collects a backtest's fills, equity curve and (optionally) report series."""

    def __init__(
        self, broker: PaperBroker, symbols: Any, *, detail: bool, sample_s: float = 0.01
    ) -> None:
        self.broker = broker
        self.symbols = symbols  # the engine's SymbolTable: its last ticks mark the positions
        self.detail = detail
        self.fills: list[RecordedFill] = []
        # Equity on a uniform grid: sample i is at i * sample_s virtual seconds.
        self.sample_s = sample_s
        self.equity: list[float] = []
        self.next_sample = 0.0
        self.paths: dict[str, _Path] = {}
        self.ticks: dict[str, int] = defaultdict(int)
        self.run_virtual: dict[str, list[float]] = defaultdict(list)
        self.run_wall: dict[str, list[float]] = defaultdict(list)
        self.step_wall: dict[int, float] = defaultdict(float)  # run id -> compute seconds
        self.step_cost: dict[str, list[float]] = {}  # "workflow.step" -> [calls, seconds]

    # -- feeding ------------------------------------------------------------------------------

    def tick(self, symbol: str, price: float, t: float) -> None:
        """A tick about to be fed (reports only: the price paths)."""
        path = self.paths.get(symbol)
        if path is None:
            path = self.paths[symbol] = _Path(_PATH_POINTS)
        path.add(t, price)
        self.ticks[symbol] += 1

    def marks(self) -> dict[str, float]:
        """The last price of every symbol with a position (what equity is marked to)."""
        table = self.symbols
        marks = {}
        for name in self.broker.positions():
            state = table.get(name)
            if state is not None and state.last_tick is not None:
                marks[name] = state.last_tick.price
        return marks

    def sample(self, t: float) -> None:
        """Extend the equity grid up to virtual time ``t`` (call before time passes ``t``)."""
        if t < self.next_sample:
            return
        value = self.broker.equity(self.marks())
        equity = self.equity
        while self.next_sample <= t:
            equity.append(value)
            if len(equity) >= _EQUITY_POINTS:
                # Keep the grid uniform at half the resolution.
                del equity[1::2]
                self.sample_s *= 2
            self.next_sample = len(equity) * self.sample_s

    def fill(self, fill: Fill, t: float) -> None:
        position = self.broker.position(fill.symbol).qty
        self.fills.append(
            RecordedFill(
                t, fill.client_order_id, fill.symbol, str(fill.side), fill.qty, fill.price,
                fill.fee, fill.realized_pnl, position,
            )
        )

    def step_done(self, run_id: int, step: str, seconds: float) -> None:
        """An action took ``seconds`` of real time (a StepMeter, for reports)."""
        self.step_wall[run_id] += seconds
        cost = self.step_cost.get(step)
        if cost is None:
            cost = self.step_cost[step] = [0.0, 0.0]
        cost[0] += 1
        cost[1] += seconds

    def step_costs_us(self) -> dict[str, float]:
        """Mean real time per call of each step's action, in µs: what ``--latency
        WORKFLOW.STEP=...`` would model it as."""
        return {k: round(total / calls * 1e6, 2) for k, (calls, total) in
                sorted(self.step_cost.items()) if calls}

    def run_finished(self, run: Any) -> None:
        wall = self.step_wall.pop(run.id, 0.0)
        if run.outcome == "completed":
            name = run.workflow.name
            self.run_virtual[name].append(run.finished_at - run.trigger_at)
            self.run_wall[name].append(wall)

    # -- results ------------------------------------------------------------------------------

    def figures(self) -> Figures:
        broker = self.broker
        marks = self.marks()
        equity_end = broker.equity(marks)
        curve = [*self.equity, equity_end]
        peak = -math.inf
        max_dd = max_dd_pct = 0.0
        for value in curve:
            peak = max(peak, value)
            if peak - value > max_dd:
                max_dd = peak - value
                max_dd_pct = max_dd / peak if peak > 0 else 0.0
        closing = [f for f in self.fills if f.realized_pnl != 0.0]
        hit_rate = (
            sum(1 for f in closing if f.realized_pnl > 0.0) / len(closing) if closing else None
        )
        turnover = math.fsum(f.qty * f.price for f in self.fills)
        return Figures(
            pnl=equity_end - broker.initial_cash,
            realized_pnl=broker.realized_pnl,
            unrealized_pnl=broker.unrealized_pnl(marks),
            fees=broker.fees_paid,
            fills=len(self.fills),
            turnover=turnover / broker.initial_cash if broker.initial_cash else 0.0,
            hit_rate=hit_rate,
            max_drawdown=max_dd,
            max_drawdown_pct=max_dd_pct,
            sharpe=_sharpe(curve, self.sample_s),
        )

    def positions(self) -> dict[str, dict[str, float]]:
        return {
            s: {"qty": p.qty, "avg_cost": p.avg_cost, "realized_pnl": p.realized_pnl}
            for s, p in sorted(self.broker.positions().items())
        }


def _sharpe(curve: list[float], step_s: float) -> float | None:
    returns = [b / a - 1.0 for a, b in itertools.pairwise(curve) if a > 0]
    if len(returns) < _SHARPE_MIN_RETURNS:
        return None  # too few points for a ratio that means anything
    mean = math.fsum(returns) / len(returns)
    var = math.fsum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    if var <= 0.0:
        return None
    return mean / math.sqrt(var) * math.sqrt(_TRADING_SECONDS_PER_YEAR / step_s)


def result_digest(
    fills: list[RecordedFill], positions: dict[str, dict[str, float]], pnl: dict[str, float]
) -> str:
    """sha256 of the ordered fills, the final positions and the P&L.

    Floats are written by orjson as their shortest round-trip form, so equal results give equal
    bytes on any run of the same build; a one-ulp difference anywhere changes the digest.
    """
    doc = {"fills": fills, "positions": positions, "pnl": pnl}
    blob = orjson.dumps(msgspec.to_builtins(doc), option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(blob).hexdigest()
