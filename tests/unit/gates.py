"""The one piece of state the gated test actions share: gates, the log of calls, a probe.

A step action is named in a config by its import path (``tests.unit.run_actions:gated``), so
what it records and what it waits on has to be reachable from the module; instead of every
action module keeping its own globals, they all keep them on :data:`BOARD`, and the autouse
fixture in ``tests/unit/conftest.py`` resets it around every test (no event outlives the loop
it was bound to, no call leaks into the next test).

A gate is an ``asyncio.Event`` by key; a released gate stays open, so a re-run of the same
step (after a preemption or a retry) passes straight through; :meth:`Board.release_all` opens
every gate, present and future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["BOARD", "Board", "reset"]


class Board:
    def __init__(self) -> None:
        self.log: list[Any] = []  # every action's records, in the order they happened
        self.finished: set[int] = set()  # id() of records whose attempt left its action
        self.probe: Callable[[], object] | None = None
        self.bound: dict[str, Any] = {}  # what a test hands its actions (e.g. its fake clock)
        self._gates: dict[Hashable, asyncio.Event] = {}
        self._all_open = False

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def reset_gates(self) -> None:
        """Close every gate again, keeping the log: before a test's next ``asyncio.run`` (an
        event a task waited on belongs to that loop)."""
        self._gates.clear()
        self._all_open = False

    def gate(self, key: Hashable) -> asyncio.Event:
        event = self._gates.get(key)
        if event is None:
            event = self._gates[key] = asyncio.Event()
            if self._all_open:
                event.set()
        return event

    def release(self, *keys: Hashable) -> None:
        for key in keys:
            self.gate(key).set()

    def release_all(self) -> None:
        self._all_open = True
        for event in self._gates.values():
            event.set()

    def records(self, kind: type[Any]) -> list[Any]:
        """The records of one action module (its record type), in order."""
        return [r for r in self.log if isinstance(r, kind)]


BOARD = Board()


def reset() -> None:
    BOARD.reset()
