"""Recent ticks per symbol: the window strategies compute their signals from.

The engine records every accepted tick here before it triggers workflows, so a step always sees
at least the tick that triggered its run. Memory is bounded: ``depth`` ticks per symbol. The
class lives in :mod:`fastpath.symbols` (compiled, with a pure-Python twin).
"""

from __future__ import annotations

from fastpath.symbols import MarketData

__all__ = ["MarketData"]
