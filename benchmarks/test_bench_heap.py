"""Heap operations: the compiled heap, its Python twin, and ``heapq`` with tuples, in one run.

Each benchmark call performs a batch of operations on a heap held at a steady size (every
removal is matched by a push), so the figure per operation is ``mean / BATCH``. The heapq
baseline for ``update``/``remove``/``pop_worst`` does what a heapq user must: find the entry by
linear search, change or delete it, and re-heapify -- O(n) against the addressable heap's O(log n).

Run: ``make bench`` (or ``pytest benchmarks/test_bench_heap.py --benchmark-json=...``), then
``python -m benchmarks.report`` prints the ratios against heapq from that same run.
"""

from __future__ import annotations

import heapq
import importlib
import random
from collections.abc import Callable
from typing import Any

import pytest

from fastpath.heap import NO_EXTENSIONS

SIZES = [1_000, 100_000, 1_000_000]
FAST_BATCH = 1_000
IMPLS = ["heapq", "python"] + ([] if NO_EXTENSIONS else ["cython"])
PRIORITIES = 8


def _keys(n: int, seed: int) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    return [(rng.randrange(PRIORITIES), rng.random()) for _ in range(n)]


class HeapqBaseline:
    """The obvious alternative: a list of ``(priority, deadline, seq, item)`` tuples."""

    def __init__(self, keys: list[tuple[int, float]]) -> None:
        self.heap = [(p, d, i, i) for i, (p, d) in enumerate(keys)]
        heapq.heapify(self.heap)
        self.seq = len(keys)

    def push(self, p: int, d: float, item: Any) -> int:
        seq = self.seq
        self.seq += 1
        heapq.heappush(self.heap, (p, d, seq, item))
        return seq

    def pop(self) -> Any:
        return heapq.heappop(self.heap)[3]

    def _index(self, seq: int) -> int:
        for i, entry in enumerate(self.heap):
            if entry[2] == seq:
                return i
        raise KeyError(seq)

    def update(self, seq: int, p: int) -> None:
        i = self._index(seq)
        _, d, s, item = self.heap[i]
        self.heap[i] = (p, d, s, item)
        heapq.heapify(self.heap)

    def remove(self, seq: int) -> Any:
        i = self._index(seq)
        entry = self.heap[i]
        self.heap[i] = self.heap[-1]
        self.heap.pop()
        heapq.heapify(self.heap)
        return entry[3]

    def pop_worst(self) -> Any:
        i = max(range(len(self.heap)), key=self.heap.__getitem__)
        entry = self.heap[i]
        self.heap[i] = self.heap[-1]
        self.heap.pop()
        heapq.heapify(self.heap)
        return entry[3]


class Subject:
    """One implementation filled to ``size``, plus the live handles we can address."""

    def __init__(self, impl: str, size: int) -> None:
        keys = _keys(size, seed=size)
        self.rng = random.Random(7)
        if impl == "heapq":
            self.heap: Any = HeapqBaseline(keys)
            self.handles = list(range(size))
        else:
            module = "fastpath._heap" if impl == "cython" else "fastpath._heap_py"
            cls = importlib.import_module(module).PriorityHeap
            self.heap = cls(size + FAST_BATCH)
            self.handles = [self.heap.push(p, d, i) for i, (p, d) in enumerate(keys)]

    def random_handle_index(self) -> int:
        return self.rng.randrange(len(self.handles))


_SUBJECTS: dict[tuple[str, int], Subject] = {}


def subject(impl: str, size: int) -> Subject:
    # Filling a 1e6-entry heap takes seconds in the Python twin: build each one once per run.
    key = (impl, size)
    if key not in _SUBJECTS:
        _SUBJECTS.clear()  # keep at most one large heap alive at a time
        _SUBJECTS[key] = Subject(impl, size)
    return _SUBJECTS[key]


def _batch(impl: str, size: int, fast: int, slow: int) -> int:
    # The O(n) heapq operations at 1e5-1e6 take milliseconds each: fewer per call.
    if impl == "heapq":
        return slow if size >= 100_000 else fast // 10
    if impl == "python":
        return fast // 4
    return fast


def _run(benchmark: Any, fn: Callable[[], None], batch: int, slow: bool) -> None:
    benchmark.extra_info["batch"] = batch
    rounds = 3 if slow else 20
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"n={n:.0e}")
@pytest.mark.parametrize("impl", IMPLS)
def test_push_pop(benchmark: Any, impl: str, size: int) -> None:
    s = subject(impl, size)
    heap = s.heap
    batch = _batch(impl, size, FAST_BATCH, FAST_BATCH)
    keys = _keys(batch, seed=1)
    benchmark.group = f"push+pop n={size:.0e}"

    def work() -> None:
        push, pop = heap.push, heap.pop
        for p, d in keys:
            push(p, d, None)
            pop()

    _run(benchmark, work, batch, slow=False)


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"n={n:.0e}")
@pytest.mark.parametrize("impl", IMPLS)
def test_update(benchmark: Any, impl: str, size: int) -> None:
    s = subject(impl, size)
    batch = _batch(impl, size, FAST_BATCH, 3)
    benchmark.group = f"update n={size:.0e}"
    picks = [s.handles[s.random_handle_index()] for _ in range(batch)]
    rng = random.Random(3)
    prios = [rng.randrange(PRIORITIES) for _ in range(batch)]

    if impl == "heapq":
        def work() -> None:
            for h, p in zip(picks, prios, strict=True):
                s.heap.update(h, p)
    else:
        def work() -> None:
            update = s.heap.update
            for h, p in zip(picks, prios, strict=True):
                update(h, p)

    _run(benchmark, work, batch, slow=impl == "heapq" and size >= 100_000)


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"n={n:.0e}")
@pytest.mark.parametrize("impl", IMPLS)
def test_remove(benchmark: Any, impl: str, size: int) -> None:
    s = subject(impl, size)
    batch = _batch(impl, size, FAST_BATCH, 3)
    benchmark.group = f"remove n={size:.0e}"
    rng = random.Random(5)

    def work() -> None:
        # Remove a random live entry and push a replacement: size stays put, handles stay live.
        heap, handles = s.heap, s.handles
        for _ in range(batch):
            i = rng.randrange(len(handles))
            heap.remove(handles[i])
            handles[i] = heap.push(rng.randrange(PRIORITIES), 0.5, None)

    _run(benchmark, work, batch, slow=impl == "heapq" and size >= 100_000)


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"n={n:.0e}")
@pytest.mark.parametrize("impl", IMPLS)
def test_pop_worst(benchmark: Any, impl: str, size: int) -> None:
    s = subject(impl, size)
    batch = _batch(impl, size, FAST_BATCH, 3)
    benchmark.group = f"pop_worst n={size:.0e}"
    keys = _keys(batch, seed=9)

    def work() -> None:
        heap = s.heap
        for p, d in keys:
            heap.pop_worst()
            heap.push(p, d, None)

    _run(benchmark, work, batch, slow=impl == "heapq" and size >= 100_000)
