# cython: language_level=3
"""Typed layout of engine/core/runs.py, compiled in place (see that file)."""

cimport cython

from fastpath._heap cimport PriorityHeap
from engine.core.counters cimport StepCounters, WorkflowCounters
from engine.core.symbols cimport SymbolState


cdef class Run
cdef class Lane


cdef class StepDef:
    cdef public int index
    cdef public object config
    cdef public object name
    cdef public object action
    cdef public object fn
    cdef public object kind
    cdef public double timeout_s
    cdef public object retry
    cdef public bint preemptible
    cdef public object params
    cdef public tuple deps
    cdef public tuple dependents
    cdef public bint sends_orders
    cdef public object seed
    cdef public StepCounters counters


cdef class WorkflowDef:
    cdef public object name
    cdef public object config
    cdef public object priority
    cdef public object route
    cdef public int max_concurrent
    cdef public object on_busy
    cdef public double deadline_s
    cdef public bint enabled
    cdef public WorkflowCounters counters
    cdef public Lane lane
    cdef public tuple steps
    cdef public tuple roots

    cpdef object run_priority(self, object symbol_priority)


cdef class StepContext:
    cdef public object run_id
    cdef public object workflow
    cdef public object step
    cdef public object symbol
    cdef public object tick
    cdef public object inputs
    cdef public object attempt
    cdef public object params
    cdef public object market
    cdef public object broker
    cdef public object risk
    cdef public object clock
    cdef public object seed
    cdef public bint sends_orders
    cdef object _rng


cdef class StepRun:
    cdef public Run run
    cdef public StepDef spec
    cdef public object state
    cdef public int waiting
    cdef public int attempts
    cdef public int preemptions
    cdef public object handle
    cdef public long long seq
    cdef public object timer
    cdef public double ready_at
    cdef public object urgent_at
    cdef public object started_at
    cdef public object finished_at
    cdef public object output
    cdef public object error

    cpdef advance(self, object new)
    cdef _init(self, Run run, StepDef spec)
    @cython.locals(run=Run, spec=StepDef, ctx=StepContext)
    cpdef StepContext context(self, object market, object broker, object risk, object clock)


cdef class Run:
    cdef public object id
    cdef public WorkflowDef workflow
    cdef public SymbolState symbol
    cdef public tuple key
    cdef public object tick
    cdef public object priority
    cdef public double trigger_at
    cdef public double deadline
    cdef public object state
    cdef public list steps
    cdef public dict outputs
    cdef public int completed
    cdef public int running
    cdef public object started_at
    cdef public object finished_at
    cdef public object error
    cdef public object outcome
    cdef public object follow_up
    cdef public double follow_up_at
    cdef public object follow_up_seq
    cdef public object cancel_reason
    cdef public bint suspended
    cdef public bint logged
    cdef public bint stored

    cdef _init(self, object run_id, WorkflowDef workflow, SymbolState symbol, object tick,
               object priority, double trigger_at)
    @cython.locals(step=StepRun, spec=StepDef, steps=list)
    cdef list _make_steps(self, WorkflowDef workflow)
    @cython.locals(step=StepRun)
    cpdef release(self)
    cpdef advance(self, object new)


cdef class Lane:
    cdef public object name
    cdef public object owner
    cdef public int max_concurrent
    cdef public PriorityHeap heap
    cdef public int running
    cdef public bint paused
