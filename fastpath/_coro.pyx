# cython: language_level=3
"""Start a coroutine without paying for StopIteration, and await the rest of one that already
ran to its first suspension; the pure-Python twin is ``_coro_py``.

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


cdef class Resume:
    """The rest of ``coro``, which already ran up to its first suspension (``yielded``): await
    it, then read :attr:`result`, what the coroutine returned.

    The same protocol as ``yield from``: values and exceptions -- a preemption's or timeout's
    CancelledError included -- are passed through to the coroutine until it returns. The
    task's resumption (``__next__``, a C slot) reaches the coroutine through one
    ``PyIter_Send``, and its return ends the await with no exception at all: the value goes to
    :attr:`result` and ``__next__`` ends the iteration bare, which Cython compiles to a plain
    NULL return. (A ``StopIteration`` carrying the value costs an exception object and a
    traceback entry per step: more than the twin's Python generator saves.)"""

    cdef object coro
    cdef object first  # what the coroutine yielded at its first suspension, handed out once
    cdef bint started
    cdef public object result

    def __cinit__(self, object coro, object yielded):
        self.coro = coro
        self.first = yielded
        self.started = False
        self.result = None

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        cdef PyObject* out = NULL
        cdef int status
        if not self.started:
            # The awaiting coroutine's first step asks for a value: the suspension that
            # already happened, which goes up to the task as if it happened now.
            self.started = True
            first = self.first
            self.first = None
            return first
        status = PyIter_Send(self.coro, None, &out)
        value = <object>out
        Py_XDECREF(out)
        if status == 1:
            return value
        self.result = value
        raise StopIteration  # bare: compiled to "exhausted", no exception object

    def send(self, value):
        # Only a value other than None comes here (None takes __next__); asyncio sends none.
        cdef PyObject* out = NULL
        cdef int status
        if not self.started:
            self.started = True
            first = self.first
            self.first = None
            return first
        status = PyIter_Send(self.coro, value, &out)
        got = <object>out
        Py_XDECREF(out)
        if status == 1:
            return got
        self.result = got
        raise StopIteration(got)

    def throw(self, typ, val=None, tb=None):
        self.started = True
        try:
            if val is None and tb is None:
                return self.coro.throw(typ)
            return self.coro.throw(typ, val, tb)
        except StopIteration as stop:
            # It caught the exception and returned (a step that handles its cancellation).
            self.result = stop.value
            raise StopIteration(stop.value)

    def close(self):
        self.coro.close()
