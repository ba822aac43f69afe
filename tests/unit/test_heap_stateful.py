"""Random push/pop/update/remove/pop_worst sequences against a plain reference model."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from fastpath import HeapFullError
from tests.conftest import HEAP_IMPLEMENTATIONS

CAPACITY = 12
priorities = st.integers(min_value=0, max_value=4)
deadlines = st.sampled_from([0.0, 1.0, 2.5, -1.0, float("inf")])


def make_machine(module_name: str) -> type[RuleBasedStateMachine]:
    heap_cls = importlib.import_module(module_name).PriorityHeap

    class HeapMachine(RuleBasedStateMachine):
        handles = Bundle("handles")

        def __init__(self) -> None:
            super().__init__()
            self.heap = heap_cls(CAPACITY)
            # The model: handle -> [priority, deadline, seq, item]; order is min over the key.
            self.model: dict[int, list[Any]] = {}
            self.seq = 0
            self.dead: list[int] = []

        def _best(self) -> int:
            return min(self.model, key=lambda h: tuple(self.model[h][:3]))

        def _worst(self) -> int:
            return max(self.model, key=lambda h: tuple(self.model[h][:3]))

        @precondition(lambda self: len(self.model) < CAPACITY)
        @rule(target=handles, p=priorities, d=deadlines)
        def push(self, p: int, d: float) -> int:
            item = f"item{self.seq}"
            handle = self.heap.push(p, d, item)
            assert handle not in self.model
            self.model[handle] = [p, d, self.seq, item]
            self.seq += 1
            return handle

        @precondition(lambda self: len(self.model) == CAPACITY)
        @rule(p=priorities)
        def push_when_full(self, p: int) -> None:
            with pytest.raises(HeapFullError):
                self.heap.push(p, 0.0, "x")

        @precondition(lambda self: bool(self.model))
        @rule()
        def pop(self) -> None:
            best = self._best()
            assert self.heap.peek_key() == tuple(self.model[best][:3])
            assert self.heap.pop() == self.model.pop(best)[3]
            self.dead.append(best)

        @precondition(lambda self: bool(self.model))
        @rule()
        def pop_worst(self) -> None:
            worst = self._worst()
            assert self.heap.peek_worst_key() == tuple(self.model[worst][:3])
            assert self.heap.pop_worst() == self.model.pop(worst)[3]
            self.dead.append(worst)

        @rule(h=handles, p=st.none() | priorities, d=st.none() | deadlines)
        def update(self, h: int, p: int | None, d: float | None) -> None:
            if h in self.model:
                self.heap.update(h, priority=p, deadline=d)
                if p is not None:
                    self.model[h][0] = p
                if d is not None:
                    self.model[h][1] = d
            else:
                with pytest.raises(KeyError):
                    self.heap.update(h, priority=p, deadline=d)

        @rule(h=consumes(handles))
        def remove(self, h: int) -> None:
            if h in self.model:
                assert self.heap.remove(h) == self.model.pop(h)[3]
                self.dead.append(h)
            else:
                with pytest.raises(KeyError):
                    self.heap.remove(h)

        @invariant()
        def agrees_with_model(self) -> None:
            assert len(self.heap) == len(self.model)
            for h, (p, d, s, item) in self.model.items():
                assert self.heap.key(h) == (p, d, s)
                assert self.heap.item(h) == item
            for h in self.dead[-4:]:
                if h not in self.model:
                    assert h not in self.heap

    # Distinct names keep hypothesis' example database from mixing up the two twins' cases.
    HeapMachine.__name__ = HeapMachine.__qualname__ = f"HeapMachine_{module_name.rsplit('.', 1)[1]}"
    HeapMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                             deadline=None)
    return HeapMachine


for _impl in HEAP_IMPLEMENTATIONS:
    _module = "fastpath._heap_py" if _impl == "python" else "fastpath._heap"
    globals()[f"TestHeapStateful_{_impl}"] = make_machine(_module).TestCase
