"""Adopting a run found in flight: rebuilt with its progress and handed to the coordinator.

Storage's recovery (a restart) and a cluster node's takeover (a partition's checkpoint) both
find runs that were in flight when their previous process stopped. Each is rebuilt under its
old id -- so its order steps keep their client order ids and stay idempotent -- with the steps
it had completed (their outputs, attempts and timings kept, never run again), then made live by
:meth:`Coordinator.install <engine.core.coordinator.Coordinator.install>`.
"""

from __future__ import annotations

from typing import Any, Literal

from engine.core.coordinator import Coordinator
from engine.core.events import Tick
from engine.core.fsm import StepState
from engine.core.runs import Run

__all__ = ["Adopted", "Completed", "adopt"]

Adopted = Literal["resumed", "restarted", "dropped"]
# A completed step as stored: output, attempts, preemptions, and when it started and finished
# in microseconds after its run's creation (None where unknown).
Completed = tuple[Any, int, int, int | None, int | None]


def adopt(
    coordinator: Coordinator,
    run_id: int,
    workflow: str,
    symbol_name: str,
    tick: Tick,
    completed: dict[str, Completed],
    created_at: float | None = None,
) -> Adopted:
    """Re-create a run found in flight; ``resumed`` (its completed steps kept), ``restarted``
    (nothing done yet, or its stored progress does not fit its workflow any more: it starts
    over under the same id) or ``dropped`` (its workflow is gone or disabled, or the symbol
    already has a run of it).

    ``created_at`` is when the run was first triggered, on this process's clock (the stored
    wall-clock time minus one wall-minus-engine offset read for the whole recovery, so runs
    created at the same instant still tie and keep their order): the run keeps that instant,
    so what is stored of it when it ends says when it was created, not when the daemon
    restarted -- and its deadline and its run latency count from then too (the outage
    included: that is how long it took)."""
    wf = coordinator.workflows.get(workflow)
    if wf is None or not wf.enabled:
        return "dropped"
    symbols = coordinator.symbols
    symbol = symbols.get(symbol_name) or symbols.register(symbol_name, wf.priority)
    if (
        coordinator.pending_run(workflow, symbol_name) is not None
        or coordinator.active_run(workflow, symbol_name) is not None
    ):
        return "dropped"
    now = coordinator.clock.now()
    # Never later than now: the wall clock may have gone back since.
    trigger_at = now if created_at is None else min(now, created_at)
    run = Run(run_id, wf, symbol, tick, wf.run_priority(symbol.priority), trigger_at)
    run.stored = True  # its row is in the database: storage replaces it when the run ends
    names = {st.spec.name: st for st in run.steps}
    outcome: Adopted = "resumed" if completed else "restarted"
    if completed and not completed.keys() <= names.keys():
        completed, outcome = {}, "restarted"
    for name, (output, attempts, preemptions, started_us, finished_us) in completed.items():
        step = names[name]
        step.advance(StepState.RUNNING)
        step.advance(StepState.COMPLETED)
        step.output = output
        step.attempts = attempts
        step.preemptions = preemptions
        # Half a microsecond over: records truncate to whole microseconds, and the sum's
        # rounding must not take one off at every restart.
        if started_us is not None:
            step.started_at = trigger_at + (started_us + 0.5) / 1e6
        if finished_us is not None:
            step.finished_at = trigger_at + (finished_us + 0.5) / 1e6
        run.outputs[name] = output
        run.completed += 1
    for step in run.steps:
        step.waiting = sum(
            1 for d in step.spec.deps if run.steps[d].state is not StepState.COMPLETED
        )
    last = symbol.last_tick
    if last is not None and last.ts >= tick.ts and last != tick:
        # Newer data was accepted before the stop: it gets its follow-up run.
        run.follow_up, run.follow_up_at = last, now
    coordinator.install(run, now)
    return outcome
