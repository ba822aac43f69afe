# cython: language_level=3
"""C-level layout of the addressable min-max heap (see _heap.pyx for the algorithm)."""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


cdef struct Entry:
    # One heap position, 16 bytes: four share a cache line, so a node's four grandchildren are
    # read in one. ``key`` packs priority and deadline so that one unsigned comparison orders
    # nearly every pair; only equal packed keys consult the full key (see _pack in _heap.pyx).
    uint64_t key
    int32_t slot
    uint32_t tie    # decides most equal packed keys (see _tie in _heap.pyx)


cdef struct Key:
    # The full key of the entry in a slot, exactly as given: the tie-breaker and key()'s answer.
    int64_t prio
    double deadline
    uint64_t seq


cdef class PriorityHeap:
    cdef void* _raw            # the allocation behind _heap (which is cache-line aligned)
    cdef Entry* _heap          # heap position -> entry
    cdef Key* _keys            # slot -> full key
    cdef int32_t* _pos         # slot -> heap position, -1 when the slot is free
    cdef uint32_t* _gen        # slot -> generation, bumped when the slot is freed
    cdef int32_t* _free        # stack of free slots
    cdef Py_ssize_t _nfree
    cdef Py_ssize_t _size
    cdef Py_ssize_t _capacity
    cdef list _items           # slot -> item (the only Python objects per entry)
    cdef uint64_t _seq
    cdef uint64_t _tie_base    # the sequence number a tie field counts from
    cdef uint64_t _tie_pushes  # pushes since the tie fields were last recomputed
    cdef uint64_t _pushes
    cdef uint64_t _pops
    cdef uint64_t _updates
    cdef uint64_t _removes

    cpdef object push_keyed(self, object priority, object deadline, object seq, object item)
    cpdef object pop(self)
    cpdef bint head_before(self, PriorityHeap other) except -1
    cdef object _insert(self, int64_t prio, double deadline, uint64_t seq, object item)
    cdef Py_ssize_t _slot_of(self, object handle) except -2
    cdef void _rebase(self, uint64_t seq) noexcept nogil
    cdef Py_ssize_t _worst_pos(self) noexcept nogil
    cdef object _delete_at(self, Py_ssize_t i)
    cdef void _fix(self, Py_ssize_t i) noexcept nogil
