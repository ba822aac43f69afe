# cython: language_level=3
"""C-level layout of the JSON writer (see _jsonw.pyx): the record builders call it in C."""


cdef class JsonWriter:
    cdef char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef bint utf8  # something not ASCII was written since the last take()

    cdef int _reserve(self, Py_ssize_t n) except -1
    cpdef void raw(self, bytes piece) except *
    cpdef void byte(self, int c) except *
    cpdef void null(self) except *
    cpdef void integer(self, long long v) except *
    cpdef void real(self, double x) except *
    cpdef void text(self, str s) except *
    cpdef void value(self, object o) except *
    cpdef void close(self, int bracket) except *
    cpdef void truncate(self, Py_ssize_t size) except *
    cpdef str take(self)
