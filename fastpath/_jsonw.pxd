# cython: language_level=3
"""C-level layout of the JSON writer (see _jsonw.pyx): the record builders call it in C."""


cdef class JsonWriter:
    cdef char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef bint utf8  # something not ASCII was written since the last take()

    cdef bint failed  # memory ran out: what was written is incomplete; take() raises

    # Most of the pieces the record builders write (dozens per run) cannot fail but for want
    # of memory, which take() reports: noexcept spares each such call an error check.
    cdef bint _room(self, Py_ssize_t n) noexcept
    cpdef void raw(self, bytes piece) except *
    cpdef void byte(self, int c) noexcept
    cpdef void null(self) noexcept
    cpdef void integer(self, long long v) noexcept
    cpdef void real(self, double x) except *
    cpdef void text(self, str s) except *
    cpdef void value(self, object o) except *
    cpdef void close(self, int bracket) noexcept
    cpdef void truncate(self, Py_ssize_t size) noexcept
    cpdef str take(self)
