"""tickflow strategies: high-frequency and trend steps, indicators, paper broker, risk checks.

Workflow configs name actions by import path (``strategies.hft:calculate_signal``). Strategy code
imports only ``engine.core.strategy`` of the engine (checked by import-linter); the daemon's
composition root builds the paper broker and risk manager from here.
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
from .hft import (
    MarketSnapshot,
    OrderOutcome,
    Signal,
    SignalParams,
    calculate_signal,
    collect_data,
    execute_order,
)
from .indicators import Bar, IndicatorError
from .risk import RiskDecision, RiskError, RiskLimits, RiskManager
from .trend import (
    Direction,
    TrendData,
    TrendParams,
    TrendSignal,
    calculate_trend,
    collect_trend_data,
)

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
    "SignalParams",
    "StrategyError",
    "TrendData",
    "TrendParams",
    "TrendSignal",
    "calculate_signal",
    "calculate_trend",
    "collect_data",
    "collect_trend_data",
    "execute_order",
]
