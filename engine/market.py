"""Recent ticks per symbol: the window strategies compute their signals from.

The engine records every accepted tick here before it triggers workflows, so a step always sees
at least the tick that triggered its run. Memory is bounded: ``depth`` ticks per symbol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from .events import Tick

__all__ = ["MarketData"]


class MarketData:
    """A bounded ring of the latest ticks for each symbol."""

    __slots__ = ("_depth", "_ticks")

    def __init__(self, depth: int = 512) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._depth = depth
        self._ticks: dict[str, deque[Tick]] = {}

    @property
    def depth(self) -> int:
        return self._depth

    def record(self, tick: Tick) -> None:
        ring = self._ticks.get(tick.symbol)
        if ring is None:
            ring = self._ticks[tick.symbol] = deque(maxlen=self._depth)
        ring.append(tick)

    def window(self, symbol: str, n: int | None = None) -> Sequence[Tick]:
        """The last ``n`` ticks of ``symbol``, oldest first (all kept ticks if ``n`` is None)."""
        ring = self._ticks.get(symbol)
        if not ring:
            return ()
        if n is None or n >= len(ring):
            return tuple(ring)
        return tuple(ring)[-n:]

    def latest(self, symbol: str) -> Tick | None:
        ring = self._ticks.get(symbol)
        return ring[-1] if ring else None

    def symbols(self) -> list[str]:
        return list(self._ticks)
