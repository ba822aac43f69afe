"""State an incremental strategy step carries from one run to the next, and which ticks are new.

An incremental step (the trend bars, the HFT snapshot columns) folds in only the ticks that
arrived since its previous run instead of recomputing over the whole market window. Two things
keep that correct under the engine's semantics:

* **Which ticks are new.** A tick carries no sequence number, but every tick the engine records
  is its own object (one per ``DATA_READY``), so a :class:`TickCursor` remembers the last tick
  it consumed and finds it again, by identity, in the next window: what follows it is new. A
  retry, a follow-up run after conflation, or the next attempt after a timeout finds the same
  ticks already consumed and folds nothing twice. When that tick is no longer in the window
  (more ticks arrived than the window holds, or this is another engine's market) the state
  restarts from the window: it never builds on ticks it has not seen.
* **Whose state.** :class:`StepStates` keeps one state per engine market, workflow, step and
  symbol, so two workflows using the same action, or two engines in one process, never share
  one. Each state has a lock: a step configured to run in a thread, whose timed-out attempt is
  still running when its retry starts, cannot interleave two updates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from engine.core.strategy import Context, Tick

__all__ = ["StepState", "StepStates", "TickCursor"]

S = TypeVar("S", bound="StepState")


class TickCursor:
    """The last tick a step consumed; :meth:`find` says where the unconsumed ticks start."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: Tick | None = None

    def find(self, window: Sequence[Tick]) -> int:
        """The index in ``window`` of the first tick not consumed yet (``len(window)`` when
        there is none), or ``-1`` when continuity is lost: the state must restart from the
        whole window.

        The search runs from the newest tick back, so its cost is the number of new ticks.
        """
        last = self.last
        if last is None:
            return -1
        i = len(window) - 1
        while i >= 0:
            if window[i] is last:
                return i + 1
            i -= 1
        return -1

    def consumed(self, window: Sequence[Tick]) -> None:
        """Mark every tick of ``window`` consumed (call once they are folded in)."""
        if window:
            self.last = window[-1]

    def reset(self) -> None:
        self.last = None


class StepState:
    """Base of a per-step state: the cursor, the lock, and the params it was built with (a
    reload that changes them restarts the state)."""

    __slots__ = ("cursor", "key", "lock")

    def __init__(self) -> None:
        self.cursor = TickCursor()
        self.lock = threading.Lock()
        self.key: object = None

    def changed(self, key: object) -> bool:
        """Whether ``key`` (the step's params) differs from the one the state was built with;
        the loader hands every run of a step the same params object, so ``is`` decides fast."""
        return key is not self.key and key != self.key


class StepStates(Generic[S]):
    """States of one kind, by (market, workflow, step, symbol), made by ``factory`` on first use.

    The market (``MarketData``, per engine) is not weak-referenceable, so it is keyed by
    ``id()``; a new market that reuses a dead one's address inherits its entries, but harmlessly:
    every cursor there points at a tick of the dead market, finds nothing and restarts. At most
    ``markets`` markets are remembered (a test process builds hundreds of engines); past that the
    first-seen is forgotten, whose steps restart if it is still in use.
    """

    def __init__(self, factory: Callable[[], S], *, markets: int = 16) -> None:
        if markets < 1:
            raise ValueError(f"markets must be >= 1, got {markets}")
        self._factory = factory
        self._markets = markets
        self._by_market: dict[int, dict[tuple[str, str, str], S]] = {}
        self._lock = threading.Lock()

    def get(self, ctx: Context[Any]) -> S:
        states = self._by_market.get(id(ctx.market))
        if states is None:
            states = self._add_market(id(ctx.market))
        key = (ctx.workflow, ctx.step, ctx.symbol)
        state = states.get(key)
        if state is None:
            with self._lock:
                state = states.get(key)
                if state is None:
                    state = states[key] = self._factory()
        return state

    def _add_market(self, market_id: int) -> dict[tuple[str, str, str], S]:
        with self._lock:
            states = self._by_market.get(market_id)
            if states is None:
                while len(self._by_market) >= self._markets:
                    del self._by_market[next(iter(self._by_market))]
                states = self._by_market[market_id] = {}
            return states

    def clear(self) -> None:
        """Forget every state (tests; a step then restarts from its next window)."""
        with self._lock:
            self._by_market.clear()

    def __len__(self) -> int:
        return sum(len(states) for states in self._by_market.values())
