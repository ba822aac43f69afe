"""The trading desk of the daemon: the broker and the risk manager, built once from config.

This is the one place that knows the concrete paper broker and risk manager (the composition
root wires them in): the engine core, storage and config see only the :class:`Broker` and
:class:`Risk` protocols of ``engine.core.strategy``. A live broker adapter would be chosen here.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.config import BrokerSettings, RiskSettings
from strategies.broker import PaperBroker
from strategies.risk import RiskLimits, RiskManager

__all__ = ["build_broker", "build_risk", "risk_limits"]


def build_broker(settings: BrokerSettings) -> PaperBroker:
    """The paper broker on ``[broker]``'s terms, with empty books (storage restores them)."""
    return PaperBroker(
        initial_cash=settings.initial_cash,
        slippage_bps=settings.slippage_bps,
        fee_bps=settings.fee_bps,
        default_qty=settings.order_qty,
    )


def risk_limits(settings: RiskSettings) -> RiskLimits:
    """``[risk]`` as the risk manager's limits (at start and on every reload)."""
    return RiskLimits(
        max_position=settings.max_position,
        max_notional=settings.max_notional,
        max_orders_per_sec=settings.max_orders_per_sec,
    )


def build_risk(settings: RiskSettings, clock: Callable[[], float]) -> RiskManager:
    """The risk manager; ``clock`` (epoch seconds) times its order-rate window: the engine's
    clock, so a backtest's virtual time drives the rate limit, not the machine's speed."""
    return RiskManager(risk_limits(settings), clock)
