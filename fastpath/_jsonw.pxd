# cython: language_level=3
"""C-level layout of the JSON writer (see _jsonw.pyx): the record builders call it in C."""


cdef class JsonWriter:
    cdef char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef bint utf8  # something not ASCII was written since the last take()

    cdef int _reserve(self, Py_ssize_t n) except -1
    cpdef int raw(self, bytes piece) except -1
    cpdef int byte(self, int c) except -1
    cpdef int null(self) except -1
    cpdef int integer(self, long long v) except -1
    cpdef int real(self, double x) except -1
    cpdef int text(self, str s) except -1
    cpdef int value(self, object o) except -1
    cpdef int close(self, int bracket) except -1
    cpdef int truncate(self, Py_ssize_t size) except -1
    cpdef str take(self)
