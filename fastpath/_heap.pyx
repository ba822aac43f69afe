# cython: language_level=3, binding=False
"""Compiled addressable min-max heap; the pure-Python twin is ``fastpath._heap_py``.

The algorithm, handle format and every error match the twin exactly; the shared test suite runs
against both. What makes this one fast (benchmarks/heap_ratio.py, README "Heap benchmark"):

- each heap position is a 16-byte ``Entry``: a packed 64-bit key, a 32-bit tie-breaker and the
  slot, so one unsigned comparison orders two entries and a node's four grandchildren share one
  cache line; the full ``(priority, deadline, seq)`` lives per slot and is read only when both
  packed fields are equal;
- deletion is bottom-up (Floyd): the hole walks down reading only grandchild quads, picked by a
  branch-free tournament, with the next quads prefetched, and the last entry rises into it;
- a pop prefetches the full-key line of the slot it frees, which the next push reuses;
- ``binding=False``: the methods are plain C methods, not CyFunctions, which is a cheaper call.

A push or pop touches no Python object but the item and the returned handle.
"""

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport isnan
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy

from ._stats import HeapFullError, HeapStatistics

cdef uint64_t SLOT_BITS = 32
cdef uint64_t SLOT_MASK = 0xFFFFFFFF
cdef uint32_t GEN_MASK = 0x7FFFFFFF
cdef Py_ssize_t MAX_CAPACITY = 1 << 30
cdef int64_t MAX_PRIORITY = 0x7FFFFFFFFFFFFFFF


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1


cdef extern from *:
    """
    #define TF_LIKELY(x) __builtin_expect(!!(x), 1)
    #define TF_PREFETCH(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    bint TF_LIKELY(bint) noexcept nogil
    void TF_PREFETCH(const void*) noexcept nogil


# The packed key: the priority in the top PRIO_BITS bits, the deadline's order-preserving bit
# pattern (its top 64 - PRIO_BITS bits) below it. Packing is monotone: a key that comes first
# never packs larger, so unequal packed keys order two entries exactly as their full keys do,
# and equal ones (same priority and deadline -- FIFO ties -- or the rare near-equal deadline or
# priority >= PRIO_CLAMP) go on to the tie-breaker.
#
# The tie-breaker, in the 4 bytes an Entry would otherwise pad with: the deadline's 8 bits the
# key dropped, then the sequence number relative to a per-heap base, clamped to 24 bits. Also
# monotone, so FIFO ties (one priority, one deadline) are decided in the entry itself instead of
# by two random reads of the full keys, which decide only what both leave equal. Clamped
# priorities get 0; sequence numbers outside the 2**24 window clamp to its ends, and _rebase
# moves the window when new ones fall above it.
cdef enum:
    PRIO_BITS = 8
    PRIO_CLAMP = 255
    TIE_SEQ_MAX = 0xFFFFFF

cdef extern from *:
    """
    #define TF_SIGN_BIT 0x8000000000000000ULL
    """
    const uint64_t SIGN_BIT "TF_SIGN_BIT"


cdef inline uint64_t _order_bits(double deadline) noexcept nogil:
    # IEEE doubles order like sign-magnitude integers: flip every bit of a negative one and
    # only the sign bit of a positive one, and unsigned order is numeric order (infinities too).
    cdef uint64_t bits
    if deadline == 0.0:
        deadline = 0.0  # -0.0 equals 0.0 as a key; its bit pattern must not say otherwise
    memcpy(&bits, &deadline, 8)
    if bits & SIGN_BIT:
        return ~bits
    return bits | SIGN_BIT


cdef inline Entry _entry(
    int64_t prio, double deadline, uint64_t seq, uint64_t base, int32_t slot
) noexcept nogil:
    cdef Entry e
    cdef uint64_t bits, rel
    e.slot = slot
    if <uint64_t>prio >= PRIO_CLAMP:
        # Every priority from the clamp up packs alike: the full keys decide among them.
        e.key = (<uint64_t>PRIO_CLAMP) << (64 - PRIO_BITS)
        e.tie = 0
        return e
    bits = _order_bits(deadline)
    rel = seq - base if seq >= base else 0
    if rel > TIE_SEQ_MAX:
        rel = TIE_SEQ_MAX
    e.key = (<uint64_t>prio << (64 - PRIO_BITS)) | (bits >> PRIO_BITS)
    e.tie = <uint32_t>(((bits & 0xFF) << 24) | rel)
    return e


def _packed_key(priority, deadline):
    """The packed key of ``(priority, deadline)``, after the checks ``push`` makes: for the
    property tests of the packing (tests/unit/test_heap_keys.py), not part of the API."""
    return _entry(_check_priority(priority), _check_deadline(deadline), 0, 0, 0).key


cdef bint _key_lt(const Key* a, const Key* b) noexcept nogil:
    if a.prio != b.prio:
        return a.prio < b.prio
    if a.deadline != b.deadline:
        return a.deadline < b.deadline
    return a.seq < b.seq


cdef inline bint _lt(const Entry* a, const Entry* b, const Key* keys) noexcept nogil:
    if TF_LIKELY(a.key != b.key):
        return a.key < b.key
    if a.tie != b.tie:
        return a.tie < b.tie
    return _key_lt(&keys[a.slot], &keys[b.slot])


cdef inline bint _min_level(Py_ssize_t i) noexcept nogil:
    # Level of position i is floor(log2(i + 1)); even levels (the root's included) are min levels.
    return ((63 - __builtin_clzll(<unsigned long long>(i + 1))) & 1) == 0


cdef inline bint _better(
    const Entry* a, const Entry* b, const Key* keys, bint is_min
) noexcept nogil:
    return _lt(a, b, keys) if is_min else _lt(b, a, keys)


cdef inline int64_t _check_priority(object priority) except -1:
    # Fast path for the overwhelmingly common exact int: no Python-level comparisons.
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(priority):
        v = PyLong_AsLongLongAndOverflow(priority, &overflow)
        if overflow == 0 and v >= 0:
            return v
    return _check_priority_slow(priority)


cdef int64_t _check_priority_slow(object priority) except -1:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be in [0, 2**63), got {priority}")
    return <int64_t>priority


cdef inline double _check_deadline(object deadline) except? -1.0:
    cdef double d
    if PyFloat_CheckExact(deadline):
        d = PyFloat_AS_DOUBLE(deadline)
        if not isnan(d):
            return d
    return _check_deadline_slow(deadline)


cdef double _check_deadline_slow(object deadline) except? -1.0:
    if not isinstance(deadline, (int, float)) and not hasattr(deadline, "__float__"):
        raise TypeError(f"deadline must be a real number, got {type(deadline).__name__}")
    cdef double d
    try:
        d = float(deadline)
    except OverflowError:
        # An int beyond a double's range: a ValueError like NaN's, and not an OverflowError,
        # which a caller could take for HeapFullError (an OverflowError too).
        raise ValueError(
            f"deadline must fit a float, got {type(deadline).__name__} beyond ±1.8e308"
        ) from None
    if isnan(d):
        raise ValueError("deadline must not be NaN")
    return d


cdef class PriorityHeap:
    """Addressable priority heap with a fixed capacity."""

    def __cinit__(self, capacity):
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise TypeError("capacity must be an int")
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {MAX_CAPACITY}, got {capacity}")
        cdef Py_ssize_t n = capacity
        self._capacity = n
        # Spare entries let us align &heap[3] to a cache line: with 16-byte entries the four
        # grandchildren of node i (4i+3 .. 4i+6) then fill exactly one 64-byte line, and a pair
        # of siblings never straddles two.
        self._raw = PyMem_Malloc((n + 8) * sizeof(Entry))
        if self._raw != NULL:
            self._heap = <Entry*>(
                ((<uintptr_t>self._raw + 3 * sizeof(Entry) + 63) & ~(<uintptr_t>63))
                - 3 * sizeof(Entry)
            )
        self._keys = <Key*>PyMem_Malloc(n * sizeof(Key))
        self._pos = <int32_t*>PyMem_Malloc(n * sizeof(int32_t))
        self._gen = <uint32_t*>PyMem_Malloc(n * sizeof(uint32_t))
        self._free = <int32_t*>PyMem_Malloc(n * sizeof(int32_t))
        if not (self._heap and self._keys and self._pos and self._gen and self._free):
            raise MemoryError()
        cdef Py_ssize_t s
        for s in range(n):
            self._pos[s] = -1
            self._gen[s] = 0
            self._free[s] = <int32_t>(n - 1 - s)  # pop order 0, 1, 2 ... like the twin
        self._nfree = n
        self._size = 0
        self._items = [None] * n
        self._seq = 0
        self._tie_base = 0
        self._tie_pushes = 0
        self._pushes = self._pops = self._updates = self._removes = 0

    def __dealloc__(self):
        PyMem_Free(self._raw)
        PyMem_Free(self._keys)
        PyMem_Free(self._pos)
        PyMem_Free(self._gen)
        PyMem_Free(self._free)

    # -- public API -------------------------------------------------------------------------

    @property
    def capacity(self):
        return self._capacity

    def __len__(self):
        return self._size

    def __bool__(self):
        return self._size != 0

    def __contains__(self, handle):
        if not isinstance(handle, int) or isinstance(handle, bool) or handle < 0:
            return False
        cdef uint64_t h
        try:
            h = handle
        except OverflowError:
            return False
        cdef uint64_t slot = h & SLOT_MASK
        return (
            slot < <uint64_t>self._capacity
            and self._pos[slot] >= 0
            and self._gen[slot] == (h >> SLOT_BITS)
        )

    def push(self, priority, deadline, item):
        cdef int64_t p = _check_priority(priority)
        cdef double d = _check_deadline(deadline)
        handle = self._insert(p, d, self._seq, item)
        self._seq += 1  # only after success: a refused push must not age the others
        return handle

    cpdef object push_keyed(self, object priority, object deadline, object seq, object item):
        """Push with a caller-chosen sequence number, for callers that order entries of several
        heaps under one counter (or re-queue an entry with the age it already had)."""
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_PRIORITY:
            raise ValueError(f"seq must be an int in [0, 2**63), got {seq!r}")
        cdef int64_t p = _check_priority(priority)
        cdef double d = _check_deadline(deadline)
        return self._insert(p, d, <uint64_t>seq, item)

    cpdef object pop(self):
        if self._size == 0:
            raise IndexError("pop from an empty PriorityHeap")
        self._pops += 1
        return self._delete_at(0)

    def peek(self):
        if self._size == 0:
            raise IndexError("peek at an empty PriorityHeap")
        return self._items[self._heap[0].slot]

    def peek_key(self):
        """``(priority, deadline, seq)`` of the entry ``pop`` would return."""
        if self._size == 0:
            raise IndexError("peek at an empty PriorityHeap")
        cdef Key* k = &self._keys[self._heap[0].slot]
        return (k.prio, k.deadline, k.seq)

    cpdef bint head_before(self, PriorityHeap other) except -1:
        """Whether this heap's head comes before ``other``'s (both non-empty): how a caller
        merging several heaps picks the next one without building key tuples."""
        if self._size == 0 or other._size == 0:
            raise IndexError("head_before needs two non-empty heaps")
        cdef Entry* a = &self._heap[0]
        cdef Entry* b = &other._heap[0]
        if a.key != b.key:
            return a.key < b.key
        # Not the tie-breakers: each heap counts its sequence numbers from its own base.
        return _key_lt(&self._keys[a.slot], &other._keys[b.slot])

    def pop_worst(self):
        if self._size == 0:
            raise IndexError("pop_worst from an empty PriorityHeap")
        self._removes += 1
        return self._delete_at(self._worst_pos())

    def peek_worst_key(self):
        """``(priority, deadline, seq)`` of the entry ``pop_worst`` would remove."""
        if self._size == 0:
            raise IndexError("peek at an empty PriorityHeap")
        cdef Key* k = &self._keys[self._heap[self._worst_pos()].slot]
        return (k.prio, k.deadline, k.seq)

    def update(self, handle, priority=None, deadline=None):
        cdef Py_ssize_t slot = self._slot_of(handle)
        cdef Key* k = &self._keys[slot]
        cdef int64_t p = k.prio if priority is None else _check_priority(priority)
        cdef double d = k.deadline if deadline is None else _check_deadline(deadline)
        cdef Py_ssize_t i = self._pos[slot]
        k.prio = p
        k.deadline = d
        self._heap[i] = _entry(p, d, k.seq, self._tie_base, <int32_t>slot)
        self._updates += 1
        self._fix(i)

    def remove(self, handle):
        cdef Py_ssize_t slot = self._slot_of(handle)
        self._removes += 1
        return self._delete_at(self._pos[slot])

    def key(self, handle):
        cdef Key* k = &self._keys[self._slot_of(handle)]
        return (k.prio, k.deadline, k.seq)

    def item(self, handle):
        return self._items[self._slot_of(handle)]

    def items(self):
        """The queued items in no particular order (a snapshot; safe to mutate the heap after)."""
        cdef Py_ssize_t i
        return iter([self._items[self._heap[i].slot] for i in range(self._size)])

    def statistics(self):
        return HeapStatistics(
            self._size, self._capacity, self._pushes, self._pops, self._updates, self._removes
        )

    def __repr__(self):
        return f"<PriorityHeap (cython) size={self._size} capacity={self._capacity}>"

    # -- internals --------------------------------------------------------------------------

    cdef object _insert(self, int64_t prio, double deadline, uint64_t seq, object item):
        if self._nfree == 0:
            raise HeapFullError(f"PriorityHeap is full (capacity {self._capacity})")
        if seq > self._tie_base + TIE_SEQ_MAX:
            self._rebase(seq)  # before the new entry joins: it is not filled in yet
        self._nfree -= 1
        cdef int32_t slot = self._free[self._nfree]
        cdef Py_ssize_t i = self._size
        self._size += 1
        cdef Key* k = &self._keys[slot]
        k.prio = prio
        k.deadline = deadline
        k.seq = seq
        self._heap[i] = _entry(prio, deadline, seq, self._tie_base, slot)
        self._pos[slot] = <int32_t>i
        self._items[slot] = item
        self._pushes += 1
        self._tie_pushes += 1
        self._fix(i)
        return (<uint64_t>self._gen[slot] << SLOT_BITS) | <uint64_t>slot

    cdef Py_ssize_t _slot_of(self, object handle) except -2:
        cdef uint64_t h, slot
        if isinstance(handle, int) and not isinstance(handle, bool) and handle >= 0:
            if handle <= 0xFFFFFFFFFFFFFFFF:
                h = handle
                slot = h & SLOT_MASK
                if (
                    slot < <uint64_t>self._capacity
                    and self._pos[slot] >= 0
                    and self._gen[slot] == (h >> SLOT_BITS)
                ):
                    return <Py_ssize_t>slot
        raise KeyError(f"stale or unknown heap handle {handle!r}")

    cdef Py_ssize_t _worst_pos(self) noexcept nogil:
        if self._size <= 2:
            return self._size - 1
        return 1 if _lt(&self._heap[2], &self._heap[1], self._keys) else 2

    cdef void _rebase(self, uint64_t seq) noexcept nogil:
        # Re-centre the tie window on a sequence number that fell above it. It costs a pass over
        # the heap, so it waits until as many pushes as entries have gone by since the last one.
        cdef Py_ssize_t i
        cdef Key* k
        if self._tie_pushes < <uint64_t>self._size:
            return
        self._tie_pushes = 0
        self._tie_base = seq - (TIE_SEQ_MAX >> 1) if seq > (TIE_SEQ_MAX >> 1) else 0
        for i in range(self._size):
            k = &self._keys[self._heap[i].slot]
            self._heap[i] = _entry(k.prio, k.deadline, k.seq, self._tie_base, self._heap[i].slot)

    cdef object _delete_at(self, Py_ssize_t i):
        cdef int32_t slot = self._heap[i].slot
        # Freed slots are reused last-in first-out, so the next push writes this slot's full
        # key, a line nothing else here touches: start fetching it while the sift runs.
        TF_PREFETCH(&self._keys[slot])
        item = self._items[slot]
        self._size -= 1
        cdef Py_ssize_t last = self._size
        cdef Entry x
        cdef Py_ssize_t hole
        if i < last:
            # Floyd's bottom-up deletion: the last entry would sink nearly to the bottom again,
            # so walk the hole down first without comparing it, then put the entry in the hole
            # and let it rise the little it has to.
            x = self._heap[last]
            hole = _descend(self._heap, self._keys, self._pos, last, i, _min_level(i))
            self._heap[hole] = x
            self._pos[x.slot] = <int32_t>hole
            _restore(self._heap, self._keys, self._pos, last, hole)
        self._items[slot] = None
        self._pos[slot] = -1
        self._gen[slot] = (self._gen[slot] + 1) & GEN_MASK
        self._free[self._nfree] = slot
        self._nfree += 1
        return item

    cdef void _fix(self, Py_ssize_t i) noexcept nogil:
        _restore(self._heap, self._keys, self._pos, self._size, i)


# -- the min-max order, on raw arrays (so the compiler sees constant is_min and no self) -------

cdef inline void _swap(Entry* h, int32_t* pos, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    cdef Entry tmp = h[i]
    h[i] = h[j]
    h[j] = tmp
    pos[h[i].slot] = <int32_t>i
    pos[h[j].slot] = <int32_t>j


cdef void _restore(
    Entry* h, const Key* keys, int32_t* pos, Py_ssize_t n, Py_ssize_t i
) noexcept nogil:
    # Restore the min-max order after the key at position i was set arbitrarily.
    cdef Py_ssize_t parent
    if i == 0:
        _trickle(h, keys, pos, n, 0, True)
        return
    parent = (i - 1) >> 1
    if _min_level(i):
        if _lt(&h[parent], &h[i], keys):
            # Larger than its max parent: it belongs on the max levels, and the parent's old
            # value (>= everything below) must sink through the min levels.
            _swap(h, pos, i, parent)
            _trickle(h, keys, pos, n, i, True)
            _bubble(h, keys, pos, parent, False)
        elif i > 2 and _lt(&h[i], &h[(parent - 1) >> 1], keys):
            _bubble(h, keys, pos, i, True)
        else:
            _trickle(h, keys, pos, n, i, True)
    else:
        if _lt(&h[i], &h[parent], keys):
            _swap(h, pos, i, parent)
            _trickle(h, keys, pos, n, i, False)
            _bubble(h, keys, pos, parent, True)
        elif i > 2 and _lt(&h[(parent - 1) >> 1], &h[i], keys):
            _bubble(h, keys, pos, i, False)
        else:
            _trickle(h, keys, pos, n, i, False)


cdef inline void _bubble(
    Entry* h, const Key* keys, int32_t* pos, Py_ssize_t i, bint is_min
) noexcept nogil:
    # Move ancestors down into a hole instead of swapping: one entry write per level.
    cdef Entry x = h[i]
    cdef Py_ssize_t gp
    while i > 2:
        gp = (((i - 1) >> 1) - 1) >> 1
        if not _better(&x, &h[gp], keys, is_min):
            break
        h[i] = h[gp]
        pos[h[i].slot] = <int32_t>i
        i = gp
    h[i] = x
    pos[x.slot] = <int32_t>i


cdef inline Py_ssize_t _best_of_four(
    const Entry* h, const Key* keys, Py_ssize_t g, bint is_min
) noexcept nogil:
    # A tournament on the packed keys, written so the compiler can use conditional moves: which
    # of four random keys wins is a coin toss a branch predictor would lose half the time.
    cdef uint64_t k0 = h[g].key, k1 = h[g + 1].key, k2 = h[g + 2].key, k3 = h[g + 3].key
    cdef Py_ssize_t a, b, j
    cdef uint64_t ka, kb
    if (k0 == k1) | (k2 == k3):
        return _best_of_four_exact(h, keys, g, is_min)
    if is_min:
        a = g + (k1 < k0)
        ka = k1 if k1 < k0 else k0
        b = g + 2 + (k3 < k2)
        kb = k3 if k3 < k2 else k2
        if ka == kb:
            return _best_of_four_exact(h, keys, g, is_min)
        return b if kb < ka else a
    a = g + (k1 > k0)
    ka = k1 if k1 > k0 else k0
    b = g + 2 + (k3 > k2)
    kb = k3 if k3 > k2 else k2
    if ka == kb:
        return _best_of_four_exact(h, keys, g, is_min)
    return b if kb > ka else a


cdef Py_ssize_t _best_of_four_exact(
    const Entry* h, const Key* keys, Py_ssize_t g, bint is_min
) noexcept nogil:
    # Equal packed keys among the four: let the full keys decide (FIFO ties, mostly).
    cdef Py_ssize_t m = g, j
    for j in range(g + 1, g + 4):
        if _better(&h[j], &h[m], keys, is_min):
            m = j
    return m


cdef inline Py_ssize_t _best_below(
    Entry* h, const Key* keys, Py_ssize_t n, Py_ssize_t first, Py_ssize_t g, bint is_min
) noexcept nogil:
    # The best (of i's kind) among the children (first, first + 1) and grandchildren (g..g+3)
    # of a position i, those that exist.
    cdef Py_ssize_t m
    if g + 3 < n:
        # Both children have children, and each child is no better than its own children (it
        # sits on the other kind of level): the best of the four grandchildren is the best
        # below i, and the children's line is not read at all.
        return _best_of_four(h, keys, g, is_min)
    m = first
    if first + 1 < n and _better(&h[first + 1], &h[m], keys, is_min):
        m = first + 1
    while g < n:
        if _better(&h[g], &h[m], keys, is_min):
            m = g
        g += 1
    return m


cdef Py_ssize_t _descend(
    Entry* h, const Key* keys, int32_t* pos, Py_ssize_t n, Py_ssize_t i, bint is_min
) noexcept nogil:
    # Move the hole at i down levels of its own kind, filling it each time with the best (of
    # that kind) entry below it; returns the hole's final position. The order holds everywhere
    # but at the hole throughout, so the caller may fill it with any entry and _restore it.
    cdef Py_ssize_t first, m, g
    while True:
        first = 2 * i + 1
        if first >= n:
            return i
        g = 4 * i + 3
        if 16 * i + 30 < n:
            # The next step reads one of these four grandchildren's grandchild quads: ask for
            # all four lines now, so their misses overlap this step's work and each other.
            TF_PREFETCH(&h[16 * i + 15])
            TF_PREFETCH(&h[16 * i + 19])
            TF_PREFETCH(&h[16 * i + 23])
            TF_PREFETCH(&h[16 * i + 27])
        m = _best_below(h, keys, n, first, g, is_min)
        h[i] = h[m]
        pos[h[i].slot] = <int32_t>i
        if m <= first + 1:
            return m  # a child: the hole leaves its kind of level, so stop here
        i = m


cdef inline void _trickle(
    Entry* h, const Key* keys, int32_t* pos, Py_ssize_t n, Py_ssize_t i, bint is_min
) noexcept nogil:
    # The entry x sinks through levels of its own kind (min or max), two levels a step;
    # positions it passes are filled from below, and x lands once at the end.
    cdef Py_ssize_t first, m, g, parent
    cdef Entry x = h[i]
    cdef Entry tmp
    while True:
        first = 2 * i + 1
        if first >= n:
            break
        if 16 * i + 15 < n:
            # The next step reads a child pair and a grandchild quad of one of these four
            # grandchildren: ask for all six lines now, so their misses overlap each other
            # and this step's comparisons instead of coming one after another.
            TF_PREFETCH(&h[8 * i + 7])
            TF_PREFETCH(&h[8 * i + 11])
            TF_PREFETCH(&h[16 * i + 15])
            TF_PREFETCH(&h[16 * i + 19])
            TF_PREFETCH(&h[16 * i + 23])
            TF_PREFETCH(&h[16 * i + 27])
        g = 4 * i + 3
        m = _best_below(h, keys, n, first, g, is_min)
        if not _better(&h[m], &x, keys, is_min):
            break
        h[i] = h[m]
        pos[h[i].slot] = <int32_t>i
        i = m
        if m <= first + 1:
            break  # a child: nothing below it can be out of order with x
        parent = (m - 1) >> 1
        if _better(&h[parent], &x, keys, is_min):
            # x is on the wrong side of its opposite-kind parent: trade places with it,
            # and keep sinking the parent's old entry instead.
            tmp = h[parent]
            h[parent] = x
            pos[x.slot] = <int32_t>parent
            x = tmp
    h[i] = x
    pos[x.slot] = <int32_t>i
