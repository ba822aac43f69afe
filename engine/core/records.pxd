# cython: language_level=3
"""Typed layout of engine/core/records.py, compiled in place (see that file)."""

cimport cython


from fastpath._jsonw cimport JsonWriter
from engine.core.runs cimport Run, StepRun
from engine.core.symbols cimport SymbolState

cdef int _COMMA
cdef JsonWriter _SYMBOLS_OUT
cdef object _IDLE, _DATA_READY, _COMPLETED, _PENDING, _PROCESSING
cdef double _US_LIMIT
cdef object _astuple


cpdef int _number(JsonWriter out, object x) except -1


cdef long long _us(double x) except? -1


cdef class FinishedRuns:
    cdef public JsonWriter out
    cdef public long count
    cdef public list unrow
    cdef public object first_id
    cdef public object last_id
    cdef public double finished_at

    @cython.locals(record=tuple, fixed=list, out=JsonWriter, mark=Py_ssize_t, finished=double)
    cpdef add(self, Run r, double offset)
    @cython.locals(out=JsonWriter)
    cpdef str block(self)


@cython.locals(r=Run, st=StepRun, trigger_at=double, at=double, created="long long",
               ended="long long")
cpdef long long _write_completed(JsonWriter out, object r, double offset) except? -1

@cython.locals(at=double)
cpdef int _after(JsonWriter out, object when, double trigger_at) except -1

@cython.locals(s=SymbolState, at=double, us="long long", f=tuple)
cpdef int _write_symbol(JsonWriter out, object s) except -1

@cython.locals(out=JsonWriter, mark=Py_ssize_t)
cpdef str symbol_batch(list states)


@cython.locals(r=Run, st=StepRun)
cpdef bint _order_out(object r) except -1

@cython.locals(s=SymbolState, at=double)
cpdef tuple symbol_record(object s)

@cython.locals(r=Run, st=StepRun, steps=list, attempts=int, at=double, ready=double)
cpdef tuple _steps(object r, double trigger_at)

@cython.locals(r=Run, terminal=bint, suspended=bint, trigger_at=double)
cpdef object run_record(object r, double offset, object routes)

@cython.locals(r=Run, trigger_at=double, at=double)
cpdef tuple completed_record(object r, double offset)

cpdef tuple _fix_outputs(tuple steps)

@cython.locals(r=Run, rows=list)
cpdef list run_rows(list runs, double offset, object routes)

cpdef int _write_tick(JsonWriter out, tuple f) except -1

cpdef int _optional(JsonWriter out, bytes key, object x) except -1

@cython.locals(f=tuple)
cpdef int _write_data_ready(JsonWriter out, object seq, long long received_us, object e) except -1


cdef class JournalLog:
    cdef public object seq
    cdef public double offset
    cdef public object on_signal
    cdef public long changes
    cdef public long signal_at
    cdef public JsonWriter out
    cdef public long count
    cdef public object first_seq
    cdef public double first_at
    cdef public double last_at

    @cython.locals(at=double, out=JsonWriter, mark=Py_ssize_t)
    cpdef object add(self, object kind, object event, double now)
    cpdef object add_raw(self, object kind, object symbol, object payload, double at)
    @cython.locals(out=JsonWriter, mark=Py_ssize_t)
    cpdef object _append(self, tuple record, double at)
    cpdef object _count(self, object seq, double at)
    @cython.locals(n=long)
    cpdef note(self)
    @cython.locals(out=JsonWriter)
    cpdef tuple take(self)
