# cython: language_level=3
"""Typed layout of engine/core/flow.py, compiled in place (see that file)."""

cimport cython

from engine.core.counters cimport StepCounters, WorkflowCounters
from engine.core.symbols cimport MarketData, SymbolState, SymbolTable
from engine.core.runs cimport Lane, ReadyQueue, Run, StepDef, StepRun, WorkflowDef


cdef class Agent:
    cdef public object index
    cdef public object task
    cdef public object inbox
    cdef public StepRun step
    cdef public StepRun reserved
    cdef public Lane reserved_lane
    cdef public object interrupt
    cdef public long long start_seq
    cdef public int streak
    cdef public double streak_until


cdef class CoordinatorCore:
    cdef public dict workflows
    cdef public SymbolTable symbols
    cdef public MarketData market
    cdef public ReadyQueue queue
    cdef public object clock
    cdef public object counters
    cdef public object rng
    cdef public object broker
    cdef public object risk
    cdef public DispatcherCore dispatcher
    cdef public object _now
    cdef public object _wall
    cdef public bint stopping
    cdef public object _ids
    cdef public dict runs
    cdef public dict _pending
    cdef public dict _active
    cdef public dict _route_cache
    cdef public list _run_log
    cdef public object _on_runs_changed
    cdef public dict _marked
    cdef public object last_run_id
    cdef public object finished
    cdef public double record_offset
    cdef public object on_run_finished
    cdef public object on_order_finished
    cdef public object on_busy
    cdef public object on_idle

    cpdef tuple routes(self, object priority)
    @cython.locals(symbol=SymbolState)
    cpdef accept_data(self, object event, double received_at, object default_priority)
    cpdef on_data(self, SymbolState symbol, object tick, double received_at)
    @cython.locals(pending=Run, active=Run, counters=WorkflowCounters)
    cpdef object trigger(self, WorkflowDef wf, SymbolState symbol, object tick, double at)
    @cython.locals(runs=dict)
    cpdef _register(self, Run run)
    @cython.locals(run=Run, steps=list)
    cpdef Run _start_run(self, WorkflowDef wf, SymbolState symbol, object tick, double at)
    @cython.locals(run=Run, log=list)
    cpdef list take_changed_runs(self)
    cpdef _record_finished(self, Run run)
    cpdef _log_ended(self, Run run)
    cpdef _log_shared(self, Run run)
    cpdef _log_run(self, Run run)
    cpdef _wake_storage(self)
    cpdef _enqueue(self, StepRun step, double now)
    @cython.locals(run=Run)
    cpdef _shed(self, StepRun step)
    @cython.locals(step=StepRun)
    cpdef _unqueue(self, Run run, bint cancel)
    cpdef object make_context(self, StepRun step)
    @cython.locals(run=Run)
    cpdef step_started(self, StepRun step, double now)
    @cython.locals(run=Run, nxt=StepRun, steps=list, spec=StepDef, sc=StepCounters)
    cpdef step_succeeded(self, StepRun step, object output, double now)
    cpdef bint _settle_cancel(self, Run run) except -1
    @cython.locals(wf=WorkflowDef, symbol=SymbolState, counters=WorkflowCounters)
    cpdef _end_run(self, Run run, object state, object outcome, object error, double now=*)
    @cython.locals(symbol=SymbolState)
    cpdef _update_symbol(self, Run run, object state, object error)


cdef class DispatcherCore:
    cdef public ReadyQueue queue
    cdef public object clock
    cdef public object _now
    cdef public CoordinatorCore hooks
    cdef public object executor
    cdef public list agents
    cdef public list _idle
    cdef public bint _scheduled
    cdef public object _loop
    cdef public long long dispatched
    cdef public long long preemptions
    cdef public long long timeouts
    cdef public long long overruns
    cdef public long long passes
    cdef public long long _starts
    cdef public double _ended_at
    cdef public object on_preemption_latency

    cpdef schedule(self)
    @cython.locals(lane=Lane, agent=Agent, step=StepRun, victim=Agent)
    cpdef _dispatch(self)
    @cython.locals(best=Agent, agent=Agent, step=StepRun)
    cpdef Agent _pick_victim(self, object priority)
    cpdef bint _interrupt(self, Agent agent, object reason) except -1
    @cython.locals(lane=Lane, step=StepRun)
    cpdef StepRun _take(self, Agent agent)
    cpdef object streak(self, Agent agent, StepRun step)
    @cython.locals(lane=Lane, now=double, spec=StepDef)
    cpdef object run_step(self, Agent agent, StepRun step)
    cpdef bint _cancelled(self, Agent agent, StepRun step, Lane lane, object timer) except -1
    cpdef _settle(self, Agent agent, StepRun step, Lane lane, object timer, object output,
                  object error)
    cpdef _finish(self, Agent agent, Lane lane, object timer)
    @cython.locals(step=StepRun, lane=Lane)
    cpdef _release_handed(self, Agent agent)
