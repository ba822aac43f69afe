"""Pre-trade risk checks: position limit, position notional limit, per-symbol order rate.

A rejection is an ordinary outcome (a :class:`RiskDecision` with a reason), never an exception:
hitting a limit is the system working, and a step that raised would be retried into the same
limit. Exceptions are kept for programming errors such as a negative quantity.

Both position limits apply to the position the order would leave behind (units for
``max_position``, ``units * price`` for ``max_notional``, matching ``[risk]`` in the config).
An order that only shrinks the position passes both, so the book can always trade back inside
limits that were lowered on reload. The position checks come before ``order_rate``, which
decides the reported reason when several limits are hit at once.

The rate limit allows ``max_orders_per_sec`` orders per symbol in any sliding 1-second window.
The config allows fractional rates. Above 1/s they round down (2.5/s allows 2 in any second: a
limit rounds towards safety; averaging 2.5 would let 4 through in some 1-second span). Below
1/s the window stretches instead: 0.5/s is one order in any 2 seconds.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import msgspec

from engine.core.strategy import Broker, RiskDecision, RiskReason, Side, TickflowError

__all__ = [
    "RiskDecision",
    "RiskError",
    "RiskLimits",
    "RiskManager",
    "RiskReason",
]

class RiskError(TickflowError, ValueError):
    """Invalid limits or an impossible order handed to a risk check."""


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-symbol limits; defaults match ``[risk]`` in ``config/default.toml``.

    ``max_position``: largest absolute position (units) an order may leave behind.
    ``max_notional``: largest absolute position value (``units * price``) an order may leave.
    ``max_orders_per_sec``: orders per symbol per second, over a sliding window.
    """

    max_position: float = 1_000.0
    max_notional: float = 250_000.0
    max_orders_per_sec: float = 20.0

    def __post_init__(self) -> None:
        # msgspec validates constraints only when decoding, so direct construction checks here.
        for name in ("max_position", "max_notional", "max_orders_per_sec"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                raise RiskError(f"{name} must be a positive finite number, got {value!r}")

    @property
    def rate_burst(self) -> int:
        """Orders allowed within one :attr:`rate_window`."""
        return max(1, math.floor(self.max_orders_per_sec))

    @property
    def rate_window(self) -> float:
        """Length of the sliding window in seconds: 1 s unless the rate is below one per second."""
        return max(1.0, 1.0 / self.max_orders_per_sec)


ALLOWED = RiskDecision(True)


class RiskManager:
    """Applies :class:`RiskLimits` using an injected clock (epoch seconds) for the rate window.

    It implements the engine's :class:`~engine.core.strategy.Risk` protocol; the daemon builds
    one from ``[risk]`` with the engine's clock (virtual in a backtest).
    """

    def __init__(self, limits: RiskLimits, clock: Callable[[], float]) -> None:
        self._limits = limits
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}

    @property
    def limits(self) -> RiskLimits:
        return self._limits

    def set_limits(self, limits: RiskLimits) -> None:
        """Swap limits (config reload); the order-rate history is kept."""
        self._limits = limits

    def check(
        self, symbol: str, side: Side | str, qty: float, price: float, broker: Broker
    ) -> RiskDecision:
        """Whether an order may be sent now. Does not record it: call :meth:`record` once sent."""
        try:
            side = Side(side)
        except ValueError:
            raise RiskError(f"side must be BUY or SELL, got {side!r}") from None
        if not (math.isfinite(qty) and qty > 0.0):
            raise RiskError(f"qty must be a positive finite number, got {qty!r}")
        if not (math.isfinite(price) and price > 0.0):
            raise RiskError(f"price must be a positive finite number, got {price!r}")
        limits = self._limits

        current = broker.position(symbol).qty
        after = current + (qty if side is Side.BUY else -qty)
        reducing = abs(after) <= abs(current) and (after == 0.0 or (after > 0.0) == (current > 0.0))
        if not reducing:
            if abs(after) > limits.max_position:
                return RiskDecision(
                    False,
                    "max_position",
                    f"position would be {after:g}, limit is {limits.max_position:g}",
                )
            exposure = abs(after) * price
            if exposure > limits.max_notional:
                return RiskDecision(
                    False,
                    "max_notional",
                    f"position value would be {exposure:.2f}, limit is {limits.max_notional:.2f}",
                )

        recent = self._window(symbol)
        if len(recent) >= limits.rate_burst:
            return RiskDecision(
                False,
                "order_rate",
                f"{len(recent)} orders in the last {limits.rate_window:g}s, "
                f"limit is {limits.max_orders_per_sec:g}/s",
            )
        return ALLOWED

    def record(self, symbol: str) -> None:
        """Count an order sent for ``symbol`` now in its sliding rate window."""
        self._window(symbol).append(self._clock())

    def recent_orders(self, symbol: str) -> int:
        """Orders recorded for ``symbol`` within the current sliding window."""
        return len(self._window(symbol))

    def _window(self, symbol: str) -> deque[float]:
        now = self._clock()
        sent = self._sent.get(symbol)
        if sent is None:
            sent = self._sent[symbol] = deque()
        cutoff = now - self._limits.rate_window
        while sent and sent[0] <= cutoff:
            sent.popleft()
        # A wall clock stepped backwards would leave "future" stamps that block the symbol until
        # the clock catches up (possibly hours); forgetting them risks one burst, not an outage.
        if sent and sent[-1] > now:
            kept = [t for t in sent if t <= now]
            sent.clear()
            sent.extend(kept)
        return sent
