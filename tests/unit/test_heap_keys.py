"""Key edge values: the compiled heap's packed 64-bit key, and the order both twins keep.

The compiled heap compares ``(priority, deadline)`` packed into one unsigned integer and falls
back to the full key only when two packed keys are equal. That is exact only if the packing is
monotone -- a key that comes first never packs larger -- for every value ``push`` accepts:
priority 0 up to 2**63 - 1 (255 and above all pack alike), any deadline but NaN, -0.0 equal to
0.0, infinities, subnormals, ints as large as a float holds. These properties check that, and
that deep heaps full of such keys (ties included) come out in exactly the model's order.
"""

from __future__ import annotations

import importlib
import math
import sys
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath import HeapStatistics
from tests.conftest import HEAP_IMPLEMENTATIONS

MAX_PRIORITY = 2**63 - 1
EDGE_PRIORITIES = [0, 1, 7, 254, 255, 256, 2**31, 2**62, MAX_PRIORITY]
EDGE_DEADLINES: list[float] = [
    0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, sys.float_info.max, -sys.float_info.max,
    sys.float_info.min, 5e-324, -5e-324, 1e-300, 1e300, 12345.678901234,
    # Neighbours that differ only in the low mantissa bits the packing drops: they pack alike
    # and must be told apart by the full key.
    12345.678901234 + 1.8189894035458565e-12, math.nextafter(1.0, 2.0), math.nextafter(1.0, 0.0),
]

priorities = st.sampled_from(EDGE_PRIORITIES) | st.integers(min_value=0, max_value=MAX_PRIORITY)
deadlines = (
    st.sampled_from(EDGE_DEADLINES)
    | st.floats(allow_nan=False)
    | st.integers(min_value=-(2**1000), max_value=2**1000)  # ints a float can hold
)
# Few distinct values, so heaps fill with ties: equal packed keys, equal full keys but for seq.
crowded = st.tuples(st.sampled_from([0, 1, 254, 255, 300]), st.sampled_from(EDGE_DEADLINES[:8]))
keys = st.tuples(priorities, deadlines) | crowded


MODULES = {"python": "fastpath._heap_py", "cython": "fastpath._heap"}
# Parametrized by name rather than through the heap_module fixture: hypothesis re-runs a test
# body many times, and a function-scoped fixture would not be re-made between examples.
each_twin = pytest.mark.parametrize("impl", HEAP_IMPLEMENTATIONS)


def twin(impl: str) -> ModuleType:
    return importlib.import_module(MODULES[impl])


compiled_only = pytest.mark.skipif(
    "cython" not in HEAP_IMPLEMENTATIONS, reason="the compiled heap is ruled out"
)


def compiled() -> ModuleType:
    return importlib.import_module("fastpath._heap")


def full_key(p: int, d: float) -> tuple[int, float]:
    return (p, float(d))


@compiled_only
@settings(max_examples=400)
@given(a=keys, b=keys)
def test_packing_is_monotone(a: tuple[int, float], b: tuple[int, float]) -> None:
    pack = compiled()._packed_key
    ka, kb = pack(*a), pack(*b)
    assert 0 <= ka < 2**64
    if full_key(*a) < full_key(*b):
        assert ka <= kb
    if ka < kb:
        assert full_key(*a) < full_key(*b)
    if full_key(*a) == full_key(*b):
        assert ka == kb  # -0.0 and 0.0 included


@compiled_only
def test_packing_edges() -> None:
    pack = compiled()._packed_key
    assert pack(0, -0.0) == pack(0, 0.0)
    assert pack(0, -math.inf) < pack(0, -sys.float_info.max) < pack(0, -5e-324) < pack(0, 0.0)
    assert pack(0, 0.0) < pack(0, sys.float_info.min) < pack(0, sys.float_info.max)
    assert pack(0, sys.float_info.max) < pack(0, math.inf)
    # The packing drops a deadline's 8 lowest bits: the smallest subnormal packs like 0.0, and
    # only the full key tells them apart.
    assert pack(0, 5e-324) == pack(0, 0.0)
    assert pack(0, math.inf) < pack(1, -math.inf)  # priority first, whatever the deadline
    assert pack(254, math.inf) < pack(255, -math.inf)
    assert pack(255, -math.inf) == pack(MAX_PRIORITY, math.inf)  # clamped: full keys decide
    assert pack(3, 2**100) == pack(3, float(2**100))  # an int deadline packs as its float


@compiled_only
@pytest.mark.parametrize(
    ("priority", "deadline", "exc", "match"),
    [
        (0, math.nan, ValueError, "deadline must not be NaN"),
        (0, 10**400, ValueError, "deadline must fit a float, got int"),
        (-1, 0.0, ValueError, r"priority must be in \[0, 2\*\*63\)"),
        (2**63, 0.0, ValueError, r"priority must be in \[0, 2\*\*63\)"),
    ],
)
def test_packing_refuses_what_push_refuses(
    priority: int, deadline: Any, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        compiled()._packed_key(priority, deadline)


def test_a_deadline_beyond_a_float_is_refused_without_side_effects(
    heap_module: ModuleType,
) -> None:
    h = heap_module.PriorityHeap(4)
    a = h.push(1, 1.0, "a")
    for bad in (10**400, -(10**400)):
        with pytest.raises(ValueError, match="deadline must fit a float, got int beyond"):
            h.push(1, bad, "bad")
        with pytest.raises(ValueError, match="deadline must fit a float"):
            h.push_keyed(1, bad, 9, "bad")
        with pytest.raises(ValueError, match="deadline must fit a float"):
            h.update(a, deadline=bad)
    assert h.key(a) == (1, 1.0, 0)
    assert h.statistics() == HeapStatistics(1, 4, 1, 0, 0, 0)
    assert h.push(1, 2**1000, "huge but a float") != a  # the largest ints a float holds pass
    assert [h.pop(), h.pop()] == ["a", "huge but a float"]


@each_twin
@settings(max_examples=60)
@given(entries=st.lists(keys, min_size=1, max_size=300))
def test_deep_heaps_pop_in_model_order_both_ways(
    impl: str, entries: list[tuple[int, float]]
) -> None:
    heap_module = twin(impl)
    # Hundreds of entries: several min-max levels below the root, so sifts take the four-
    # grandchildren path and the bottom-up deletion, on keys that tie in every way.
    model = sorted(
        ((*full_key(p, d), seq) for seq, (p, d) in enumerate(entries)), key=lambda k: k
    )
    best = heap_module.PriorityHeap(len(entries))
    worst = heap_module.PriorityHeap(len(entries))
    for p, d in entries:
        best.push(p, d, None)
        worst.push(p, d, None)
    out = []
    while best:
        out.append(best.peek_key())
        best.pop()
    assert out == model
    out = []
    while worst:
        out.append(worst.peek_worst_key())
        worst.pop_worst()
    assert out == model[::-1]


@each_twin
@settings(max_examples=60)
@given(
    entries=st.lists(keys, min_size=2, max_size=200),
    changes=st.lists(st.tuples(st.integers(min_value=0), keys), max_size=60),
    removals=st.lists(st.integers(min_value=0), max_size=30),
)
def test_updates_and_removals_keep_the_model_order(
    impl: str,
    entries: list[tuple[int, float]],
    changes: list[tuple[int, tuple[int, float]]],
    removals: list[int],
) -> None:
    heap_module = twin(impl)
    h = heap_module.PriorityHeap(len(entries))
    model = {}
    for seq, (p, d) in enumerate(entries):
        model[h.push(p, d, seq)] = (*full_key(p, d), seq)
    handles = list(model)
    for pick, (p, d) in changes:
        handle = handles[pick % len(handles)]
        h.update(handle, priority=p, deadline=d)
        model[handle] = (*full_key(p, d), model[handle][2])
    for pick in removals:
        if len(handles) > 1:
            handle = handles.pop(pick % len(handles))
            assert h.remove(handle) == model.pop(handle)[2]
    for handle, key in model.items():
        assert h.key(handle) == key
    expected = [key[2] for key in sorted(model.values())]
    half = len(expected) // 2
    assert [h.pop() for _ in range(half)] == expected[:half]
    assert [h.pop_worst() for _ in range(len(expected) - half)] == expected[half:][::-1]


@each_twin
def test_negative_zero_ties_with_zero_in_fifo_order(impl: str) -> None:
    h = twin(impl).PriorityHeap(8)
    for i, d in enumerate([0.0, -0.0, 0.0, -0.0]):
        h.push(2, d, i)
    assert [h.pop() for _ in range(4)] == [0, 1, 2, 3]
    for i, d in enumerate([-0.0, 0.0, -0.0]):
        h.push(2, d, i)
    assert [h.pop_worst() for _ in range(3)] == [2, 1, 0]


@each_twin
def test_deadlines_that_pack_alike_are_ordered_by_the_full_key(impl: str) -> None:
    # 1.0 and the next double pack to the same 64 bits; pushed newest-first, the earlier
    # deadline must still come out first, and clamped priorities by their real values.
    h = twin(impl).PriorityHeap(8)
    h.push(1, math.nextafter(1.0, 2.0), "later")
    h.push(1, 1.0, "earlier")
    h.push(2**40, 0.0, "p2**40")
    h.push(300, 5.0, "p300")
    h.push(255, 9.0, "p255")
    assert [h.pop() for _ in range(5)] == ["earlier", "later", "p255", "p300", "p2**40"]


@each_twin
@settings(max_examples=80)
@given(
    ops=st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from([0, 1, 2**24 - 1, 2**24, 2**24 + 1, 2**40, MAX_PRIORITY])
            | st.integers(min_value=0, max_value=MAX_PRIORITY)
            | st.integers(min_value=0, max_value=2**26),
        ),
        min_size=1,
        max_size=120,
    ),
    priority=st.sampled_from([0, 3, 300]),
)
def test_fifo_ties_follow_the_sequence_over_its_whole_range(
    impl: str, ops: list[tuple[bool, int]], priority: int
) -> None:
    # One priority and one deadline: only the sequence numbers order these entries. They span
    # 0 .. 2**63 - 1, far wider than the compiled heap's 24-bit tie window, which must clamp
    # and move (rebase) without ever ordering two entries wrongly.
    h = twin(impl).PriorityHeap(len(ops))
    live: set[int] = set()
    for pop_first, seq in ops:
        if pop_first and live:
            assert h.pop() == min(live)
            live.remove(min(live))
        if seq not in live:  # equal full keys would leave in an unspecified order
            h.push_keyed(priority, 1.5, seq, seq)
            live.add(seq)
    assert [h.pop_worst() for _ in range(len(live) // 2)] == sorted(live, reverse=True)[
        : len(live) // 2
    ]
    assert [h.pop() for _ in range(len(h))] == sorted(live)[: len(live) - len(live) // 2]


@each_twin
@settings(max_examples=60)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "pop a", "pop b"]),
            st.sampled_from([0, 2**24, 2**40, 2**40 + 10, 2**41]) | st.integers(0, 2**42),
            st.sampled_from([1.0, 2.0]),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_head_before_agrees_with_the_full_keys_across_heaps(
    impl: str, ops: list[tuple[str, int, float]]
) -> None:
    # Two heaps whose tie windows moved differently: head_before must not compare their
    # tie-breakers, only packed keys and then full keys.
    heaps = {"a": twin(impl).PriorityHeap(len(ops)), "b": twin(impl).PriorityHeap(len(ops))}
    for op, seq, deadline in ops:
        if op.startswith("pop"):
            if heaps[op[-1]]:
                heaps[op[-1]].pop()
        else:
            heaps[op].push_keyed(4, deadline, seq, None)
        a, b = heaps["a"], heaps["b"]
        if a and b:
            assert a.head_before(b) == (a.peek_key() < b.peek_key())
            assert b.head_before(a) == (b.peek_key() < a.peek_key())
