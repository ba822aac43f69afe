"""Explicit state machines for runs and steps.

Each machine is a transition table; ``advance`` checks it and records when the state was entered.
An illegal transition is a bug in the engine, so it raises :class:`IllegalTransition` loudly
instead of being tolerated.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from engine.core.errors import IllegalTransition

__all__ = [
    "RUN_TRANSITIONS",
    "STEP_TRANSITIONS",
    "Interrupt",
    "RunState",
    "StepState",
    "check_transition",
]


class RunState(enum.Enum):
    # Members are singletons: hash by identity (C speed) instead of Enum's Python-level
    # hash of the name -- the transition tables are consulted on every step.
    __hash__ = object.__hash__

    PENDING = "pending"  # created, no step started yet (conflation still replaces its input)
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # shed, cancelled by an operator, or abandoned at shutdown

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_RUN


class StepState(enum.Enum):
    __hash__ = object.__hash__

    PENDING = "pending"  # waiting for dependencies, queued, backing off, or preempted
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_STEP


class Interrupt(enum.Enum):
    """Why the dispatcher cut a running step short (it cancels the agent's task with one)."""

    __hash__ = object.__hash__

    PREEMPT = "preempt"
    TIMEOUT = "timeout"
    CANCEL = "cancel"


_TERMINAL_RUN = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})
_TERMINAL_STEP = frozenset({StepState.COMPLETED, StepState.FAILED, StepState.CANCELLED})

RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.CANCELLED}),
    RunState.RUNNING: frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED}),
    RunState.COMPLETED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
}

STEP_TRANSITIONS: Mapping[StepState, frozenset[StepState]] = {
    StepState.PENDING: frozenset({StepState.RUNNING, StepState.CANCELLED}),
    # RUNNING -> PENDING: preempted (not an attempt) or failed with retries left (backing off).
    StepState.RUNNING: frozenset(
        {StepState.COMPLETED, StepState.FAILED, StepState.CANCELLED, StepState.PENDING}
    ),
    StepState.COMPLETED: frozenset(),
    StepState.FAILED: frozenset(),
    StepState.CANCELLED: frozenset(),
}


def check_transition(
    table: Mapping[Any, frozenset[Any]], current: enum.Enum, new: enum.Enum, what: str
) -> None:
    allowed: frozenset[enum.Enum] = table[current]
    if new not in allowed:
        raise IllegalTransition(
            f"{what}: illegal transition {current.value} -> {new.value}"
            f" (allowed: {', '.join(sorted(s.value for s in allowed)) or 'none, it is final'})"
        )
