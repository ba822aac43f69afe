# cython: language_level=3
"""Typed layout of fastpath/_records_py.py when compiled as fastpath._records_c (see that file)."""

cimport cython

from fastpath._runs_c cimport Run, StepRun
from fastpath._symbols_c cimport SymbolState


cdef class RunRows:
    cdef public list completed
    cdef public list rows
    cdef public list unrow
    cdef public object high


cpdef object _tick_json(object tick, dict ticks)

@cython.locals(s=SymbolState)
cpdef tuple symbol_record(object s, double now, dict ticks)

@cython.locals(r=Run, st=StepRun, steps=list, terminal=bint, suspended=bint,
               trigger_at=double)
cpdef object run_record(object r, double offset, object routes, dict ticks)

cpdef list symbol_rows(list states, double now, dict ticks)

@cython.locals(r=Run, out=RunRows, completed=list)
cpdef RunRows run_rows(list runs, double offset, object routes, dict ticks)
