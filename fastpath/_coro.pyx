# cython: language_level=3
"""Start a coroutine without paying for StopIteration; the pure-Python twin is ``_coro_py``.

A step whose coroutine returns without suspending is the common case (a cheap async action).
``coro.send(None)`` reports its return value by raising ``StopIteration``, which costs an
exception object per step; ``PyIter_Send`` (the C API behind ``await``) hands the value back
directly.
"""

from cpython.ref cimport Py_XDECREF, PyObject


cdef extern from "Python.h":
    # -1 (PYGEN_ERROR) with an exception set, 0 (PYGEN_RETURN), 1 (PYGEN_NEXT: it yielded)
    int PyIter_Send(object iterator, object arg, PyObject **presult) except -1


def start(object coro):
    """Run ``coro`` to its first suspension: ``(True, yielded)``, or ``(False, returned)``
    when it finished without suspending. Its exceptions propagate."""
    cdef PyObject* result = NULL
    cdef int status = PyIter_Send(coro, None, &result)
    value = <object>result
    Py_XDECREF(result)
    return (status == 1, value)
