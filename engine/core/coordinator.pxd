# cython: language_level=3
"""Typed layout of engine/core/coordinator.py, compiled in place (see that file)."""

cimport cython

from engine.core.counters cimport StepCounters, WorkflowCounters
from engine.core.dispatcher cimport Dispatcher, StepHooks
from engine.core.runlog cimport RunLog
from engine.core.ready cimport ReadyQueue
from engine.core.runs cimport Lane, Run, StepDef, StepRun, WorkflowDef
from engine.core.symbols cimport MarketData, SymbolState, SymbolTable


cdef class Coordinator(StepHooks):
    cdef public dict workflows
    cdef public SymbolTable symbols
    cdef public MarketData market
    cdef public ReadyQueue queue
    cdef public object clock
    cdef public object counters
    cdef public object rng
    cdef public object broker
    cdef public object risk
    cdef public Dispatcher dispatcher
    cdef public object _now
    cdef public object _wall
    cdef public bint stopping
    cdef public object _ids
    cdef public dict runs
    cdef public dict _pending
    cdef public dict _active
    cdef public dict _route_cache
    cdef public RunLog run_log
    cdef public object last_run_id
    cdef public object id_for
    cdef public object event_seq
    cdef public double record_offset
    cdef public object on_run_finished
    cdef public object on_order_finished
    cdef public object on_busy
    cdef public object on_idle

    cpdef tuple routes(self, object priority)
    @cython.locals(symbol=SymbolState)
    cpdef accept_data(self, object event, double received_at, object default_priority)
    cpdef on_data(self, SymbolState symbol, object tick, double received_at)
    @cython.locals(pending=Run, active=Run, counters=WorkflowCounters, runlog=RunLog)
    cpdef object trigger(self, WorkflowDef wf, SymbolState symbol, object tick, double at)
    @cython.locals(runs=dict)
    cpdef _register(self, Run run)
    @cython.locals(run=Run, steps=list, runlog=RunLog)
    cpdef Run _start_run(self, WorkflowDef wf, SymbolState symbol, object tick, double at)
    cpdef _log_shared(self, RunLog runlog, Run run)
    cpdef _enqueue(self, StepRun step, double now)
    @cython.locals(run=Run)
    cpdef _shed(self, StepRun step)
    @cython.locals(step=StepRun)
    cpdef _unqueue(self, Run run, bint cancel)
    cpdef object make_context(self, StepRun step)
    @cython.locals(run=Run, runlog=RunLog)
    cpdef step_started(self, StepRun step, double now)
    @cython.locals(run=Run, nxt=StepRun, steps=list, spec=StepDef, sc=StepCounters, runlog=RunLog)
    cpdef step_succeeded(self, StepRun step, object output, double now)
    cpdef bint _settle_cancel(self, Run run) except -1
    @cython.locals(wf=WorkflowDef, symbol=SymbolState, counters=WorkflowCounters, runlog=RunLog)
    cpdef _end_run(self, Run run, object state, object outcome, object error, double now=*)
    @cython.locals(symbol=SymbolState)
    cpdef _update_symbol(self, Run run, object state, object error)
    @cython.locals(run=Run, sc=StepCounters, runlog=RunLog)
    cpdef step_failed(self, StepRun step, object error, double now, bint timeout)
    @cython.locals(run=Run, counters=WorkflowCounters)
    cpdef step_preempted(self, StepRun step, double now)
    @cython.locals(run=Run)
    cpdef step_cancelled(self, StepRun step, double now, object reason)
