"""What a step's action receives: the contract between the engine and strategy code.

An action is ``def action(ctx: StepContext) -> object`` or ``async def action(ctx) -> object``.
Its return value becomes the step's output, handed to dependent steps via ``ctx.inputs``.
Plain functions decorated with :func:`cheap` run inline on the event loop (they must be quick:
an inline step cannot be preempted or timed out mid-way); other plain functions run in a thread.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .events import Tick
from .market import MarketData

if TYPE_CHECKING:
    from strategies.broker import PaperBroker
    from strategies.risk import RiskManager

__all__ = [
    "CHEAP_ATTR",
    "SENDS_ORDERS_ATTR",
    "StepContext",
    "cheap",
    "is_cheap",
    "sends_orders",
    "sends_orders_flag",
]

CHEAP_ATTR = "__tickflow_cheap__"
SENDS_ORDERS_ATTR = "__tickflow_sends_orders__"

F = TypeVar("F", bound=Callable[..., Any])


def cheap(fn: F) -> F:
    """Mark a plain function as cheap enough to run inline on the event loop."""
    setattr(fn, CHEAP_ATTR, True)
    return fn


def is_cheap(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, CHEAP_ATTR, False))


def sends_orders(fn: F) -> F:
    """Mark an action that sends orders: config load refuses ``preemptible = true`` for it,
    because an order once sent must never be cancelled half-way."""
    setattr(fn, SENDS_ORDERS_ATTR, True)
    return fn


def sends_orders_flag(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, SENDS_ORDERS_ATTR, False))


class StepContext:
    """Everything one step attempt may look at. Built by the engine; read-only by convention."""

    __slots__ = (
        "attempt",
        "broker",
        "clock",
        "inputs",
        "market",
        "params",
        "risk",
        "rng",
        "run_id",
        "step",
        "symbol",
        "tick",
        "workflow",
    )

    def __init__(  # positional on the hot path; keywords read better everywhere else
        self,
        run_id: int,
        workflow: str,
        step: str,
        symbol: str,
        tick: Tick,
        inputs: Mapping[str, Any],
        attempt: int,
        params: Mapping[str, Any],
        market: MarketData,
        broker: PaperBroker,
        risk: RiskManager,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.step = step
        self.symbol = symbol
        self.tick = tick
        self.inputs = inputs
        self.attempt = attempt
        self.params = params
        self.market = market
        self.broker = broker
        self.risk = risk
        self.rng = rng
        self.clock = clock

    @property
    def client_order_id(self) -> str:
        """Stable across retries of this step, so a retried order never fills twice."""
        return f"{self.workflow}:{self.run_id}:{self.step}"
