"""tickflow strategies: high-frequency and trend steps, indicators, paper broker, risk checks.

Workflow configs name actions by import path (``strategies.hft:calculate_signal``); the names
re-exported here are the types other packages (engine, storage) handle.
"""

from .broker import (
    BrokerError,
    BrokerStatistics,
    DuplicateOrderError,
    Fill,
    PaperBroker,
    Position,
    Side,
)
from .common import Action, StrategyError
from .hft import MarketSnapshot, OrderOutcome, Signal, calculate_signal, collect_data, execute_order
from .indicators import Bar, IndicatorError
from .risk import RiskDecision, RiskError, RiskLimits, RiskManager
from .trend import Direction, TrendData, TrendSignal, calculate_trend, collect_trend_data

__all__ = [
    "Action",
    "Bar",
    "BrokerError",
    "BrokerStatistics",
    "Direction",
    "DuplicateOrderError",
    "Fill",
    "IndicatorError",
    "MarketSnapshot",
    "OrderOutcome",
    "PaperBroker",
    "Position",
    "RiskDecision",
    "RiskError",
    "RiskLimits",
    "RiskManager",
    "Side",
    "Signal",
    "StrategyError",
    "TrendData",
    "TrendSignal",
    "calculate_signal",
    "calculate_trend",
    "collect_data",
    "collect_trend_data",
    "execute_order",
]
