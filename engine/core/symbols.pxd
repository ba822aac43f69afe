# cython: language_level=3
"""Typed layout of engine/core/symbols.py, compiled in place (see that file)."""

cimport cython


cdef class SymbolState:
    cdef public object id
    cdef public object name
    cdef public object priority
    cdef public object phase
    cdef public object status
    cdef public object last_tick
    cdef public object last_processed
    cdef public object last_error
    cdef public set runs
    cdef public bint logged
    cdef public object key


cdef class SymbolTable:
    cdef dict _by_name
    cdef object _next_id
    cdef list _log
    cdef object _wake

    cpdef SymbolState get(self, object name)
    cpdef SymbolState register(self, object name, object priority)
    cpdef mark_data_ready(self, SymbolState state, object tick)
    cpdef set_priority(self, SymbolState state, object priority)
    cpdef mark_processing(self, SymbolState state)
    cpdef mark_completed(self, SymbolState state, double when)
    cpdef mark_failed(self, SymbolState state, object error, double when)
    cpdef mark_pending(self, SymbolState state)
    @cython.locals(state=SymbolState)
    cpdef list take_changed(self)
    cpdef _changed(self, SymbolState state)


cdef class MarketData:
    cdef long _depth
    cdef dict _ticks

    cpdef record(self, object tick)
