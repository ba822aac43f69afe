"""The shared heap suite: every test runs against the compiled heap and its pure-Python twin."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

import fastpath
from engine.core.errors import TickflowError
from fastpath import HeapFullError, HeapStatistics
from tests.conftest import HEAP_IMPLEMENTATIONS


def drain(heap: Any) -> list[Any]:
    return [heap.pop() for _ in range(len(heap))]


def test_orders_by_priority_then_deadline_then_fifo(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(16)
    h.push(2, 0.0, "p2")
    h.push(0, 5.0, "p0-late")
    h.push(0, 1.0, "p0-early-a")
    h.push(1, 0.0, "p1")
    h.push(0, 1.0, "p0-early-b")
    h.push(7, -3.0, "p7")
    assert h.peek() == "p0-early-a"
    assert drain(h) == ["p0-early-a", "p0-early-b", "p0-late", "p1", "p2", "p7"]


def test_fifo_among_equal_keys_is_stable_at_scale(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(1000)
    for i in range(1000):
        h.push(i % 3, 0.0, i)
    out = drain(h)
    assert out == sorted(range(1000), key=lambda i: (i % 3, i))


def test_head_before_compares_the_heads_of_two_heaps_by_full_key(
    heap_module: ModuleType,
) -> None:
    a, b = heap_module.PriorityHeap(8), heap_module.PriorityHeap(8)
    with pytest.raises(IndexError, match="two non-empty heaps"):
        a.head_before(b)
    a.push_keyed(1, 5.0, 7, "a")
    with pytest.raises(IndexError, match="two non-empty heaps"):
        a.head_before(b)
    b.push_keyed(1, 5.0, 3, "b")  # same priority and deadline, older: b first
    assert b.head_before(a)
    assert not a.head_before(b)
    a.push_keyed(1, 4.0, 9, "a2")  # earlier deadline beats age
    assert a.head_before(b)
    assert not b.head_before(a)
    b.push_keyed(0, 99.0, 10, "b2")  # priority beats everything
    assert b.head_before(a)
    assert not a.head_before(a)  # strict: a head is not before itself


def test_update_moves_entry_up_and_down_and_keeps_its_age(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(8)
    a = h.push(3, 0.0, "a")
    h.push(1, 0.0, "b")
    c = h.push(2, 0.0, "c")
    h.update(a, priority=1)  # decrease-key: ties with b, but a is older
    assert h.peek() == "a"
    h.update(a, priority=5)  # increase-key
    h.update(c, deadline=-1.0)
    assert h.key(c) == (2, -1.0, 2)
    assert h.key(a) == (5, 0.0, 0)
    assert drain(h) == ["b", "c", "a"]
    assert h.statistics().updates == 3


def test_update_priority_and_deadline_together(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(8)
    h.push(0, 5.0, "x")
    y = h.push(4, 9.0, "y")
    h.update(y, priority=0, deadline=1.0)
    assert drain(h) == ["y", "x"]


def test_remove_from_the_middle(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(64)
    handles = {i: h.push(i % 5, float(i), i) for i in range(40)}
    for i in (17, 3, 39, 0, 22):
        assert h.remove(handles[i]) == i
    expected = sorted(set(range(40)) - {17, 3, 39, 0, 22}, key=lambda i: (i % 5, i))
    assert drain(h) == expected


def test_pop_worst_takes_lowest_priority_latest_deadline_newest(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(8)
    assert h.push(0, 9.0, "urgent") is not None
    h.push(3, 1.0, "low-early")
    h.push(3, 2.0, "low-late-old")
    h.push(3, 2.0, "low-late-new")
    h.push(1, 0.0, "mid")
    assert h.peek_worst_key() == (3, 2.0, 3)
    assert [h.pop_worst() for _ in range(5)] == [
        "low-late-new",
        "low-late-old",
        "low-early",
        "mid",
        "urgent",
    ]


def test_pop_worst_on_one_and_two_entries(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(4)
    h.push(1, 0.0, "only")
    assert h.pop_worst() == "only"
    h.push(1, 0.0, "a")
    h.push(0, 0.0, "b")
    assert h.pop_worst() == "a"
    assert h.pop() == "b"


def test_capacity_is_fixed_and_full_push_raises(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(3)
    assert h.capacity == 3
    for i in range(3):
        h.push(0, 0.0, i)
    with pytest.raises(HeapFullError, match=r"full \(capacity 3\)") as info:
        h.push(0, 0.0, "overflow")
    assert isinstance(info.value, OverflowError)
    assert isinstance(info.value, TickflowError)
    assert len(h) == 3
    h.pop()
    h.push(0, 0.0, "fits again")
    assert len(h) == 3


@pytest.mark.parametrize("capacity", [0, -1, 2**31])
def test_bad_capacity_is_rejected(heap_module: ModuleType, capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity must be between 1 and"):
        heap_module.PriorityHeap(capacity)


def test_capacity_must_be_an_int(heap_module: ModuleType) -> None:
    with pytest.raises(TypeError, match="capacity must be an int"):
        heap_module.PriorityHeap(3.5)


def test_stale_handles_raise_keyerror_and_never_corrupt(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(2)
    a = h.push(1, 0.0, "a")
    assert a in h
    assert h.pop() == "a"
    assert a not in h
    b = h.push(2, 0.0, "b")  # reuses a's slot under a new generation
    assert b != a
    for op in (
        lambda: h.update(a, priority=0),
        lambda: h.remove(a),
        lambda: h.key(a),
        lambda: h.item(a),
    ):
        with pytest.raises(KeyError, match="stale or unknown heap handle"):
            op()
    assert h.item(b) == "b"
    assert drain(h) == ["b"]


@pytest.mark.parametrize("handle", [-1, 2**70, 12345, "x", None, True, 1.0])
def test_unknown_handles_raise_keyerror(heap_module: ModuleType, handle: Any) -> None:
    h = heap_module.PriorityHeap(4)
    h.push(0, 0.0, "x")
    with pytest.raises(KeyError, match="stale or unknown heap handle"):
        h.remove(handle)
    assert handle not in h
    assert len(h) == 1


def test_removed_handle_is_stale(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(4)
    a = h.push(0, 0.0, "a")
    assert h.remove(a) == "a"
    with pytest.raises(KeyError):
        h.remove(a)


@pytest.mark.parametrize("method", ["pop", "peek", "pop_worst", "peek_key", "peek_worst_key"])
def test_empty_heap_raises_indexerror(heap_module: ModuleType, method: str) -> None:
    h = heap_module.PriorityHeap(4)
    with pytest.raises(IndexError, match="empty PriorityHeap"):
        getattr(h, method)()


@pytest.mark.parametrize(
    ("priority", "deadline", "exc", "match"),
    [
        (-1, 0.0, ValueError, r"priority must be in \[0, 2\*\*63\)"),
        (2**63, 0.0, ValueError, r"priority must be in"),
        (True, 0.0, TypeError, "priority must be an int, got bool"),
        (1.5, 0.0, TypeError, "priority must be an int, got float"),
        ("1", 0.0, TypeError, "priority must be an int, got str"),
        (0, math.nan, ValueError, "deadline must not be NaN"),
        (0, "1.0", TypeError, "deadline must be a real number, got str"),
    ],
)
def test_bad_keys_are_rejected_without_side_effects(
    heap_module: ModuleType, priority: Any, deadline: Any, exc: type[Exception], match: str
) -> None:
    h = heap_module.PriorityHeap(4)
    a = h.push(1, 1.0, "a")
    with pytest.raises(exc, match=match):
        h.push(priority, deadline, "bad")
    with pytest.raises(exc, match=match):
        h.update(a, priority=priority if priority != 0 else None, deadline=deadline)
    assert h.key(a) == (1, 1.0, 0)
    assert h.statistics().pushes == 1
    assert drain(h) == ["a"]


def test_infinite_deadlines_order_correctly(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(4)
    h.push(1, math.inf, "never")
    h.push(1, -math.inf, "head-of-level")
    h.push(1, 0.0, "normal")
    assert drain(h) == ["head-of-level", "normal", "never"]


def test_push_keyed_orders_by_the_given_sequence(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(4)
    h.push_keyed(1, 0.0, 10, "ten")
    h.push_keyed(1, 0.0, 3, "three")
    assert h.peek_key() == (1, 0.0, 3)
    assert drain(h) == ["three", "ten"]
    with pytest.raises(ValueError, match="seq must be an int"):
        h.push_keyed(1, 0.0, -1, "bad")


def test_statistics_is_a_frozen_snapshot(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(8)
    a = h.push(0, 0.0, "a")
    h.push(1, 0.0, "b")
    h.push(2, 0.0, "c")
    h.update(a, priority=3)
    h.remove(a)
    h.pop()
    stats = h.statistics()
    assert stats == HeapStatistics(size=1, capacity=8, pushes=3, pops=1, updates=1, removes=1)
    with pytest.raises(AttributeError):
        stats.size = 9  # type: ignore[misc]
    h.pop()
    assert stats.size == 1  # the snapshot does not move with the heap


def test_items_and_len_and_bool(heap_module: ModuleType) -> None:
    h = heap_module.PriorityHeap(4)
    assert not h
    h.push(1, 0.0, "a")
    h.push(0, 0.0, "b")
    assert h
    assert len(h) == 2
    assert sorted(h.items()) == ["a", "b"]


def test_items_are_released_when_they_leave(heap_module: ModuleType) -> None:
    import weakref

    class Payload:
        pass

    h = heap_module.PriorityHeap(4)
    p = Payload()
    ref = weakref.ref(p)
    h.push(0, 0.0, p)
    del p
    assert ref() is not None
    h.pop()
    assert ref() is None


def test_both_implementations_expose_the_same_public_names() -> None:
    py = importlib.import_module("fastpath._heap_py").PriorityHeap
    public_py = {n for n in dir(py) if not n.startswith("_")}
    assert public_py >= {
        "push", "push_keyed", "pop", "peek", "peek_key", "pop_worst", "peek_worst_key",
        "update", "remove", "key", "item", "items", "statistics", "capacity",
    }
    if "cython" in HEAP_IMPLEMENTATIONS:
        c = importlib.import_module("fastpath._heap").PriorityHeap
        assert {n for n in dir(c) if not n.startswith("_")} == public_py
        for dunder in ("__len__", "__bool__", "__contains__"):
            assert hasattr(c, dunder)
            assert hasattr(py, dunder)


def test_chooser_reports_the_implementation_in_use() -> None:
    no_ext = os.environ.get("TICKFLOW_NO_EXTENSIONS", "") not in ("", "0")
    expected, module = ("python", "fastpath._heap_py") if no_ext else ("cython", "fastpath._heap")
    assert expected == fastpath.IMPLEMENTATION
    assert fastpath.PriorityHeap.__module__ == module


def test_environment_variable_forces_the_python_twin() -> None:
    env = {**os.environ, "TICKFLOW_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "import fastpath; print(fastpath.IMPLEMENTATION)"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "python"
