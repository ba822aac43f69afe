"""Pure-Python twin of ``fastpath._heap``: same API, same semantics, no compiler needed.

Both are addressable *min-max* heaps: the best entry (lowest priority number, then earliest
deadline, then lowest sequence) sits at the root, the worst at one of the root's children.
That makes ``pop_worst`` (load shedding) O(log n) like ``pop``, where a binary heap would
scan every leaf. Positions are tracked per slot, so ``update`` and ``remove`` are O(log n).

A handle is ``generation << 32 | slot``; the generation changes whenever a slot is freed,
so a handle kept past its entry's departure is detected instead of hitting a newcomer.

The compiled heap keeps the same order with packed keys and a bottom-up deletion (see
``_heap.pyx``); only entries whose whole keys are equal -- possible through ``push_keyed`` alone
-- may leave the two in different orders.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from ._stats import HeapFullError, HeapStatistics

__all__ = ["HeapFullError", "HeapStatistics", "PriorityHeap"]

_SLOT_BITS = 32
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_GEN_MASK = (1 << 31) - 1
_MAX_PRIORITY = (1 << 63) - 1
_MAX_CAPACITY = 1 << 30

Key = tuple[int, float, int]


def _min_level(i: int) -> bool:
    # Level 0 (the root) is a min level; levels alternate from there.
    return ((i + 1).bit_length() - 1) % 2 == 0


class PriorityHeap:
    """Addressable priority heap with a fixed capacity."""

    __slots__ = (
        "_capacity",
        "_free",
        "_gen",
        "_heap",
        "_items",
        "_keys",
        "_pops",
        "_pos",
        "_pushes",
        "_removes",
        "_seq",
        "_updates",
    )

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise TypeError("capacity must be an int")
        if not 1 <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {_MAX_CAPACITY}, got {capacity}")
        self._capacity = capacity
        self._heap: list[int] = []  # heap position -> slot
        self._keys: list[Key] = [(0, 0.0, 0)] * capacity  # slot -> key
        self._items: list[Any] = [None] * capacity
        self._pos: list[int] = [-1] * capacity  # slot -> heap position, -1 when free
        self._gen: list[int] = [0] * capacity
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._seq = 0
        self._pushes = self._pops = self._updates = self._removes = 0

    # -- public API -------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __contains__(self, handle: object) -> bool:
        return isinstance(handle, int) and self._slot_of(handle, raise_=False) >= 0

    def push(self, priority: int, deadline: float, item: Any) -> int:
        handle = self._insert(priority, deadline, self._seq, item)
        self._seq += 1  # only after success: a refused push must not age the others
        return handle

    def push_keyed(self, priority: int, deadline: float, seq: int, item: Any) -> int:
        """Push with a caller-chosen sequence number, for callers that order entries of several
        heaps under one counter (or re-queue an entry with the age it already had)."""
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= _MAX_PRIORITY:
            raise ValueError(f"seq must be an int in [0, 2**63), got {seq!r}")
        return self._insert(priority, deadline, seq, item)

    def pop(self) -> Any:
        if not self._heap:
            raise IndexError("pop from an empty PriorityHeap")
        self._pops += 1
        return self._delete_at(0)

    def peek(self) -> Any:
        if not self._heap:
            raise IndexError("peek at an empty PriorityHeap")
        return self._items[self._heap[0]]

    def peek_key(self) -> Key:
        """``(priority, deadline, seq)`` of the entry ``pop`` would return."""
        if not self._heap:
            raise IndexError("peek at an empty PriorityHeap")
        return self._keys[self._heap[0]]

    def head_before(self, other: PriorityHeap) -> bool:
        """Whether this heap's head comes before ``other``'s (both non-empty): how a caller
        merging several heaps picks the next one without building key tuples."""
        if not self._heap or not other._heap:
            raise IndexError("head_before needs two non-empty heaps")
        return self._keys[self._heap[0]] < other._keys[other._heap[0]]

    def pop_worst(self) -> Any:
        if not self._heap:
            raise IndexError("pop_worst from an empty PriorityHeap")
        self._removes += 1
        return self._delete_at(self._worst_pos())

    def peek_worst_key(self) -> Key:
        """``(priority, deadline, seq)`` of the entry ``pop_worst`` would remove."""
        if not self._heap:
            raise IndexError("peek at an empty PriorityHeap")
        return self._keys[self._heap[self._worst_pos()]]

    def update(
        self, handle: int, priority: int | None = None, deadline: float | None = None
    ) -> None:
        slot = self._slot_of(handle)
        old_p, old_d, seq = self._keys[slot]
        p = old_p if priority is None else _check_priority(priority)
        d = old_d if deadline is None else _check_deadline(deadline)
        self._keys[slot] = (p, d, seq)
        self._updates += 1
        self._fix(self._pos[slot])

    def remove(self, handle: int) -> Any:
        slot = self._slot_of(handle)
        self._removes += 1
        return self._delete_at(self._pos[slot])

    def key(self, handle: int) -> Key:
        return self._keys[self._slot_of(handle)]

    def item(self, handle: int) -> Any:
        return self._items[self._slot_of(handle)]

    def items(self) -> Iterator[Any]:
        """The queued items in no particular order (a snapshot; safe to mutate the heap after)."""
        return iter([self._items[s] for s in self._heap])

    def statistics(self) -> HeapStatistics:
        return HeapStatistics(
            len(self._heap), self._capacity, self._pushes, self._pops, self._updates,
            self._removes,
        )

    def __repr__(self) -> str:
        return f"<PriorityHeap (python) size={len(self._heap)} capacity={self._capacity}>"

    # -- internals --------------------------------------------------------------------------

    def _insert(self, priority: int, deadline: float, seq: int, item: Any) -> int:
        p = _check_priority(priority)
        d = _check_deadline(deadline)
        if not self._free:
            raise HeapFullError(f"PriorityHeap is full (capacity {self._capacity})")
        slot = self._free.pop()
        self._keys[slot] = (p, d, seq)
        self._items[slot] = item
        i = len(self._heap)
        self._heap.append(slot)
        self._pos[slot] = i
        self._pushes += 1
        self._fix(i)
        return (self._gen[slot] << _SLOT_BITS) | slot

    def _slot_of(self, handle: int, raise_: bool = True) -> int:
        if isinstance(handle, int) and not isinstance(handle, bool) and handle >= 0:
            slot = handle & _SLOT_MASK
            if (
                slot < self._capacity
                and self._pos[slot] >= 0
                and self._gen[slot] == handle >> _SLOT_BITS
            ):
                return slot
        if raise_:
            raise KeyError(f"stale or unknown heap handle {handle!r}")
        return -1

    def _worst_pos(self) -> int:
        n = len(self._heap)
        if n <= 2:
            return n - 1
        k = self._keys
        h = self._heap
        return 1 if k[h[1]] > k[h[2]] else 2

    def _delete_at(self, i: int) -> Any:
        h = self._heap
        slot = h[i]
        item = self._items[slot]
        last = h.pop()
        if i < len(h):
            h[i] = last
            self._pos[last] = i
            self._fix(i)
        self._items[slot] = None
        self._pos[slot] = -1
        self._gen[slot] = (self._gen[slot] + 1) & _GEN_MASK
        self._free.append(slot)
        return item

    def _swap(self, i: int, j: int) -> None:
        h = self._heap
        h[i], h[j] = h[j], h[i]
        self._pos[h[i]] = i
        self._pos[h[j]] = j

    def _fix(self, i: int) -> None:
        """Restore the min-max order after the key at position ``i`` was set arbitrarily."""
        k = self._keys
        h = self._heap
        if i == 0:
            self._trickle(0, True)
            return
        parent = (i - 1) >> 1
        if _min_level(i):
            if k[h[i]] > k[h[parent]]:
                # Larger than its max parent: it belongs on the max levels, and the parent's old
                # value (>= everything below) must sink through the min levels.
                self._swap(i, parent)
                self._trickle(i, True)
                self._bubble(parent, False)
            elif i > 2 and k[h[i]] < k[h[(parent - 1) >> 1]]:
                self._bubble(i, True)
            else:
                self._trickle(i, True)
        else:
            if k[h[i]] < k[h[parent]]:
                self._swap(i, parent)
                self._trickle(i, False)
                self._bubble(parent, True)
            elif i > 2 and k[h[i]] > k[h[(parent - 1) >> 1]]:
                self._bubble(i, False)
            else:
                self._trickle(i, False)

    def _bubble(self, i: int, is_min: bool) -> None:
        k = self._keys
        h = self._heap
        while i > 2:
            gp = (((i - 1) >> 1) - 1) >> 1
            if (k[h[i]] < k[h[gp]]) if is_min else (k[h[i]] > k[h[gp]]):
                self._swap(i, gp)
                i = gp
            else:
                return

    def _trickle(self, i: int, is_min: bool) -> None:
        k = self._keys
        h = self._heap
        n = len(h)
        while True:
            first_child = 2 * i + 1
            if first_child >= n:
                return
            # The extreme among children and grandchildren.
            m = first_child
            for c in (first_child, first_child + 1):
                if c >= n:
                    break
                if (k[h[c]] < k[h[m]]) if is_min else (k[h[c]] > k[h[m]]):
                    m = c
                for g in (2 * c + 1, 2 * c + 2):
                    if g < n and ((k[h[g]] < k[h[m]]) if is_min else (k[h[g]] > k[h[m]])):
                        m = g
            better = (k[h[m]] < k[h[i]]) if is_min else (k[h[m]] > k[h[i]])
            if not better:
                return
            self._swap(i, m)
            if m <= first_child + 1:
                return  # a child: nothing below it can be out of order with it
            parent = (m - 1) >> 1
            if (k[h[m]] > k[h[parent]]) if is_min else (k[h[m]] < k[h[parent]]):
                self._swap(m, parent)
            i = m


def _check_priority(priority: int) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}")
    if not 0 <= priority <= _MAX_PRIORITY:
        raise ValueError(f"priority must be in [0, 2**63), got {priority}")
    return priority


def _check_deadline(deadline: object) -> float:
    if not isinstance(deadline, int | float) and not hasattr(deadline, "__float__"):
        raise TypeError(f"deadline must be a real number, got {type(deadline).__name__}")
    try:
        d = float(deadline)
    except OverflowError:
        # An int beyond a double's range: a ValueError like NaN's, and not an OverflowError,
        # which a caller could take for HeapFullError (an OverflowError too).
        raise ValueError(
            f"deadline must fit a float, got {type(deadline).__name__} beyond ±1.8e308"
        ) from None
    if math.isnan(d):
        raise ValueError("deadline must not be NaN")
    return d
