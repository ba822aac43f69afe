# cython: language_level=3
"""Typed layout of engine/core/dispatcher.py, compiled in place (see that file)."""

cimport cython

from engine.core.ready cimport ReadyQueue
from engine.core.runs cimport Lane, Run, StepDef, StepRun, WorkflowDef


cdef class StepHooks:
    cpdef object make_context(self, StepRun step)
    cpdef step_started(self, StepRun step, double now)
    cpdef step_succeeded(self, StepRun step, object output, double now)
    cpdef step_failed(self, StepRun step, object error, double now, bint timeout)
    cpdef step_preempted(self, StepRun step, double now)
    cpdef step_cancelled(self, StepRun step, double now, object reason)


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
    cdef public double deadline


cdef class Dispatcher:
    cdef public ReadyQueue queue
    cdef public object clock
    cdef public object _now
    cdef public StepHooks hooks
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
    cdef public object _watch
    cdef public int _yielding
    cdef public bint _reporting
    cdef public double _watch_at
    cdef public object on_preemption_latency

    cpdef schedule(self)
    @cython.locals(lane=Lane, agent=Agent, step=StepRun)
    cpdef _dispatch(self)
    @cython.locals(lane=Lane, step=StepRun, victim=Agent, count=int)
    cpdef int _preempt(self, bint eager) except -1
    @cython.locals(best=Agent, agent=Agent, step=StepRun)
    cpdef Agent _pick_victim(self, object priority)
    cpdef bint _interrupt(self, Agent agent, object reason) except -1
    @cython.locals(lane=Lane, step=StepRun)
    cpdef StepRun _take(self, Agent agent)
    cpdef object streak(self, Agent agent, StepRun step)
    @cython.locals(lane=Lane, now=double, spec=StepDef)
    cpdef object run_step(self, Agent agent, StepRun step)
    cpdef _watch_deadline(self, Agent agent, double deadline)
    @cython.locals(agent=Agent, step=StepRun, now=double, nearest=double, deadline=double)
    cpdef _on_watch(self)
    cpdef bint _cancelled(self, Agent agent, StepRun step, Lane lane) except -1
    cpdef _settle(self, Agent agent, StepRun step, Lane lane, object output, object error)
    cpdef _finish(self, Agent agent, Lane lane)
    @cython.locals(step=StepRun, lane=Lane)
    cpdef _release_handed(self, Agent agent)
