"""Run and step state machines: every legal transition passes, every other one raises."""

from __future__ import annotations

import itertools
import re

import pytest

from engine.config import compile_workflows, loads_config
from engine.core.errors import IllegalTransition
from engine.core.events import Tick
from engine.core.fsm import RUN_TRANSITIONS, STEP_TRANSITIONS, RunState, StepState, check_transition
from engine.core.runs import Run, StepRun, WorkflowDef
from engine.core.symbols import SymbolState

CONFIG = """
[workflows.wf]
priority = 1
max_concurrent = 1

[[workflows.wf.steps]]
name = "only"
action = "tests.unit.run_actions:quick"
"""

# The contract, written out independently of the engine's tables.
LEGAL_RUN: frozenset[tuple[RunState, RunState]] = frozenset(
    {
        (RunState.PENDING, RunState.RUNNING),
        (RunState.PENDING, RunState.CANCELLED),
        (RunState.RUNNING, RunState.COMPLETED),
        (RunState.RUNNING, RunState.FAILED),
        (RunState.RUNNING, RunState.CANCELLED),
    }
)
LEGAL_STEP: frozenset[tuple[StepState, StepState]] = frozenset(
    {
        (StepState.PENDING, StepState.RUNNING),
        (StepState.PENDING, StepState.CANCELLED),
        (StepState.RUNNING, StepState.COMPLETED),
        (StepState.RUNNING, StepState.FAILED),
        (StepState.RUNNING, StepState.CANCELLED),
        (StepState.RUNNING, StepState.PENDING),  # preempted, or failed with retries left
    }
)
ILLEGAL_RUN = sorted(
    set(itertools.product(RunState, RunState)) - LEGAL_RUN, key=lambda p: (p[0].value, p[1].value)
)
ILLEGAL_STEP = sorted(
    set(itertools.product(StepState, StepState)) - LEGAL_STEP,
    key=lambda p: (p[0].value, p[1].value),
)

# How to reach each state from the initial PENDING along legal transitions.
RUN_PATH: dict[RunState, tuple[RunState, ...]] = {
    RunState.PENDING: (),
    RunState.RUNNING: (RunState.RUNNING,),
    RunState.COMPLETED: (RunState.RUNNING, RunState.COMPLETED),
    RunState.FAILED: (RunState.RUNNING, RunState.FAILED),
    RunState.CANCELLED: (RunState.CANCELLED,),
}
STEP_PATH: dict[StepState, tuple[StepState, ...]] = {
    StepState.PENDING: (),
    StepState.RUNNING: (StepState.RUNNING,),
    StepState.COMPLETED: (StepState.RUNNING, StepState.COMPLETED),
    StepState.FAILED: (StepState.RUNNING, StepState.FAILED),
    StepState.CANCELLED: (StepState.CANCELLED,),
}


def _workflow() -> WorkflowDef:
    return compile_workflows(loads_config(CONFIG))["wf"]


def _run(run_id: int = 7) -> Run:
    return Run(run_id, _workflow(), SymbolState(1, "ACME", 1), Tick("ACME", 1.0, 10.0), 1, 0.0)


def _run_in(state: RunState) -> Run:
    run = _run()
    for s in RUN_PATH[state]:
        run.advance(s)
    assert run.state is state
    return run


def _step_in(state: StepState) -> StepRun:
    step = _run().steps[0]
    for s in STEP_PATH[state]:
        step.advance(s)
    assert step.state is state
    return step


def _id(pair: object) -> str:
    assert isinstance(pair, tuple)
    a, b = pair
    return f"{a.value}->{b.value}"


def test_tables_are_exactly_the_contract() -> None:
    assert {(a, b) for a, bs in RUN_TRANSITIONS.items() for b in bs} == LEGAL_RUN
    assert {(a, b) for a, bs in STEP_TRANSITIONS.items() for b in bs} == LEGAL_STEP
    assert set(RUN_TRANSITIONS) == set(RunState)
    assert set(STEP_TRANSITIONS) == set(StepState)


def test_new_run_and_steps_start_pending() -> None:
    run = _run()
    assert run.state is RunState.PENDING
    assert [s.state for s in run.steps] == [StepState.PENDING]


@pytest.mark.parametrize("pair", sorted(LEGAL_RUN, key=_id), ids=_id)
def test_legal_run_transition(pair: tuple[RunState, RunState]) -> None:
    src, dst = pair
    run = _run_in(src)
    run.advance(dst)
    assert run.state is dst


@pytest.mark.parametrize("pair", sorted(LEGAL_STEP, key=_id), ids=_id)
def test_legal_step_transition(pair: tuple[StepState, StepState]) -> None:
    src, dst = pair
    step = _step_in(src)
    step.advance(dst)
    assert step.state is dst


@pytest.mark.parametrize("pair", ILLEGAL_RUN, ids=_id)
def test_illegal_run_transition_raises(pair: tuple[RunState, RunState]) -> None:
    src, dst = pair
    run = _run_in(src)
    expected = re.escape(f"run wf[7] ACME: illegal transition {src.value} -> {dst.value}")
    with pytest.raises(IllegalTransition, match=f"^{expected} \\(allowed: "):
        run.advance(dst)
    assert run.state is src  # a refused transition changes nothing


@pytest.mark.parametrize("pair", ILLEGAL_STEP, ids=_id)
def test_illegal_step_transition_raises(pair: tuple[StepState, StepState]) -> None:
    src, dst = pair
    step = _step_in(src)
    expected = re.escape(f"step wf[7].only: illegal transition {src.value} -> {dst.value}")
    with pytest.raises(IllegalTransition, match=f"^{expected} \\(allowed: "):
        step.advance(dst)
    assert step.state is src


def test_named_illegal_transitions() -> None:
    completed = _step_in(StepState.COMPLETED)
    with pytest.raises(
        IllegalTransition,
        match=r"^step wf\[7\]\.only: illegal transition completed -> running "
        r"\(allowed: none, it is final\)$",
    ):
        completed.advance(StepState.RUNNING)

    pending = _step_in(StepState.PENDING)
    with pytest.raises(
        IllegalTransition,
        match=r"^step wf\[7\]\.only: illegal transition pending -> completed "
        r"\(allowed: cancelled, running\)$",
    ):
        pending.advance(StepState.COMPLETED)

    cancelled = _run_in(RunState.CANCELLED)
    with pytest.raises(
        IllegalTransition,
        match=r"^run wf\[7\] ACME: illegal transition cancelled -> running "
        r"\(allowed: none, it is final\)$",
    ):
        cancelled.advance(RunState.RUNNING)

    running = _run_in(RunState.RUNNING)
    with pytest.raises(
        IllegalTransition,
        match=r"^run wf\[7\] ACME: illegal transition running -> pending "
        r"\(allowed: cancelled, completed, failed\)$",
    ):
        running.advance(RunState.PENDING)


def test_illegal_transition_is_a_runtime_error() -> None:
    # Callers that only know the built-in still catch it.
    with pytest.raises(RuntimeError):
        _run_in(RunState.COMPLETED).advance(RunState.FAILED)


def test_check_transition_directly() -> None:
    check_transition(RUN_TRANSITIONS, RunState.PENDING, RunState.RUNNING, "run x")
    with pytest.raises(
        IllegalTransition,
        match=r"^thing: illegal transition failed -> pending \(allowed: none, it is final\)$",
    ):
        check_transition(STEP_TRANSITIONS, StepState.FAILED, StepState.PENDING, "thing")


def test_terminal_properties() -> None:
    assert {s for s in RunState if s.terminal} == {
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.CANCELLED,
    }
    assert {s for s in StepState if s.terminal} == {
        StepState.COMPLETED,
        StepState.FAILED,
        StepState.CANCELLED,
    }
    # Terminal states are exactly those with no way out.
    assert {s for s in RunState if s.terminal} == {s for s in RunState if not RUN_TRANSITIONS[s]}
    assert {s for s in StepState if s.terminal} == {s for s in StepState if not STEP_TRANSITIONS[s]}


def test_preempted_step_can_run_again() -> None:
    step = _step_in(StepState.RUNNING)
    step.advance(StepState.PENDING)
    step.advance(StepState.RUNNING)
    step.advance(StepState.COMPLETED)
    assert step.state is StepState.COMPLETED
    assert step.state.terminal
