"""The ready queue on its own: global order across lanes, lane limits, preemption re-queue,
capacity shedding, re-keying and statistics.

Entries are real :class:`~engine.core.runs.StepRun` objects of runs built from compiled
workflows, so the queue sees exactly what the coordinator hands it; no engine, no loop.
"""

from __future__ import annotations

import itertools
import math

import hypothesis.strategies as st
from hypothesis import given, settings

from engine.config import compile_workflows, loads_config
from engine.core.events import Tick
from engine.core.ready import ReadyQueue
from engine.core.runs import Run, StepRun, WorkflowDef
from engine.core.stats import QueueStatistics
from engine.core.symbols import SymbolState

CONFIG = """
[workflows.alpha]
priority = 1
max_concurrent = 2
deadline_ms = 1000

[[workflows.alpha.steps]]
name = "a"
action = "tests.unit.run_actions:quick"

[workflows.beta]
priority = 1
max_concurrent = 2
deadline_ms = 1000

[[workflows.beta.steps]]
name = "b"
action = "tests.unit.run_actions:quick"
"""

WORKFLOWS: dict[str, WorkflowDef] = compile_workflows(loads_config(CONFIG))
_ids = itertools.count(1)


def make_queue(capacity: int = 100) -> ReadyQueue:
    return ReadyQueue(capacity, [(n, wf.max_concurrent) for n, wf in WORKFLOWS.items()], spare=8)


def step(workflow: str, priority: int, trigger_at: float = 0.0) -> StepRun:
    """The root step of a fresh run of ``workflow`` queued at ``priority``.

    The run's deadline is ``trigger_at + 1.0`` (both workflows have ``deadline_ms = 1000``).
    """
    run_id = next(_ids)
    symbol = SymbolState(run_id, f"S{run_id}", priority)
    tick = Tick(symbol.name, trigger_at, 10.0)
    return Run(run_id, WORKFLOWS[workflow], symbol, tick, priority, trigger_at).steps[0]


def drain(queue: ReadyQueue) -> list[StepRun]:
    """Pop everything in dispatch order (lanes' running counts untouched)."""
    out: list[StepRun] = []
    while (lane := queue.best_lane()) is not None:
        out.append(queue.pop_from(lane))
    return out


# -- global order -----------------------------------------------------------------------------


def test_global_order_across_lanes_priority_then_deadline_then_fifo() -> None:
    q = make_queue()
    s1 = step("alpha", 2, trigger_at=0.0)
    s2 = step("beta", 1, trigger_at=5.0)
    s3 = step("alpha", 1, trigger_at=3.0)
    s4 = step("beta", 0, trigger_at=9.0)
    s5 = step("beta", 1, trigger_at=3.0)  # ties s3 on (priority, deadline): FIFO after s3
    s6 = step("alpha", 2, trigger_at=0.0)  # ties s1: after it
    for s in (s1, s2, s3, s4, s5, s6):
        assert q.push(s) is None
    assert len(q) == 6
    assert drain(q) == [s4, s3, s5, s2, s1, s6]
    assert len(q) == 0
    assert all(s.handle is None for s in (s1, s2, s3, s4, s5, s6))


def test_fifo_ties_across_lanes_use_one_shared_sequence() -> None:
    q = make_queue()
    order = [step("alpha" if i % 3 else "beta", 1) for i in range(9)]
    for s in order:
        q.push(s)
    assert [s.seq for s in order] == list(range(9))
    assert drain(q) == order


def test_lane_at_its_limit_or_paused_is_skipped_not_blocking() -> None:
    q = make_queue()
    a0, a1 = step("alpha", 0), step("alpha", 0)
    b = step("beta", 3)
    for s in (a0, a1, b):
        q.push(s)
    alpha, beta = q.lanes["alpha"], q.lanes["beta"]
    assert q.best_lane() is alpha

    alpha.running = alpha.max_concurrent  # at its limit
    assert q.best_lane() is beta
    assert q.pop_from(beta) is b
    assert q.best_lane() is None  # alpha still at its limit, beta empty
    assert len(q) == 2

    alpha.running = alpha.max_concurrent - 1
    alpha.paused = True
    assert q.best_lane() is None
    alpha.paused = False
    assert q.best_lane() is alpha
    assert drain(q) == [a0, a1]


def test_requeue_front_goes_ahead_of_its_level_with_its_old_age() -> None:
    q = make_queue()
    x1, x2, x3 = step("alpha", 1), step("beta", 1), step("alpha", 1)
    for s in (x1, x2, x3):
        q.push(s)
    # x1 and x2 are dispatched, then both preempted and put back, the younger one first.
    got = [q.pop_from(q.best_lane()), q.pop_from(q.best_lane())]  # type: ignore[arg-type]
    assert got == [x1, x2]
    late = step("beta", 1, trigger_at=-10.0)  # an earlier deadline than every x
    urgent = step("beta", 0)
    q.push(late)
    q.push(urgent)
    assert q.requeue_front(x2) is None
    assert q.requeue_front(x1) is None
    assert x1.seq == 0  # the age is kept, not renewed
    assert x2.seq == 1
    assert q.lanes["alpha"].heap.key(x1.handle) == (1, -math.inf, 0)  # type: ignore[arg-type]
    # Priority 0 still first; then the re-queued pair in age order, ahead of an entry of the
    # same level with an earlier deadline; then the rest of the level.
    assert drain(q) == [urgent, x1, x2, late, x3]
    assert q.statistics().depth_by_priority == {}


# -- capacity ---------------------------------------------------------------------------------


def test_full_queue_sheds_the_lowest_priority_entry() -> None:
    q = make_queue(capacity=3)
    p0, p2, p1 = step("alpha", 0), step("beta", 2), step("alpha", 1)
    for s in (p0, p2, p1):
        assert q.push(s) is None
    newcomer = step("beta", 1)
    assert q.push(newcomer) is p2
    assert p2.handle is None
    assert len(q) == 3
    assert q.statistics().shed == 1
    assert q.depth_by_priority() == {0: 1, 1: 2}
    assert drain(q) == [p0, p1, newcomer]


def test_full_queue_sheds_the_latest_deadline_within_the_lowest_priority() -> None:
    q = make_queue(capacity=3)
    late = step("alpha", 2, trigger_at=9.0)  # older but later deadline
    early = step("beta", 2, trigger_at=5.0)
    top = step("alpha", 0)
    for s in (late, early, top):
        q.push(s)
    assert q.push(step("beta", 1)) is late
    assert q.statistics().shed == 1


def test_full_queue_sheds_the_newest_on_a_full_tie() -> None:
    q = make_queue(capacity=3)
    old, new = step("alpha", 2), step("beta", 2)
    top = step("alpha", 0)
    for s in (old, new, top):
        q.push(s)
    assert q.push(step("alpha", 1)) is new
    assert old.handle is not None


def test_full_queue_sheds_the_newcomer_when_it_is_the_worst() -> None:
    q = make_queue(capacity=3)
    queued = [step("alpha", 0), step("beta", 1), step("alpha", 1)]
    for s in queued:
        q.push(s)
    worse = step("beta", 2)
    assert q.push(worse) is worse
    assert worse.handle is None
    tie = step("alpha", 1)  # same priority and deadline as the worst queued, but newer
    assert q.push(tie) is tie
    assert len(q) == 3
    assert q.depth_by_priority() == {0: 1, 1: 2}
    assert drain(q) == queued


def test_shedding_the_newcomer_counts_as_shed() -> None:
    """``QueueStatistics.shed`` counts every shed entry, the refused newcomer included."""
    q = make_queue(capacity=1)
    q.push(step("alpha", 0))
    refused = step("beta", 5)
    assert q.push(refused) is refused
    assert q.statistics().shed == 1


def test_priority_zero_is_shed_only_when_everything_queued_is_priority_zero() -> None:
    q = make_queue(capacity=2)
    z1, z2 = step("alpha", 0), step("beta", 0)
    q.push(z1)
    q.push(z2)
    z3 = step("alpha", 0)
    assert q.push(z3) is z3  # all priority 0: the newest goes
    low = step("beta", 4)
    assert q.push(low) is low


@settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(
    capacity=st.integers(min_value=1, max_value=6),
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("push"),
                st.sampled_from(["alpha", "beta"]),
                st.integers(min_value=0, max_value=3),
                st.sampled_from([0.0, 1.0, 2.0]),
            ),
            st.tuples(st.just("pop"), st.just(""), st.just(0), st.just(0.0)),
            st.tuples(
                st.just("rekey"), st.just(""), st.integers(min_value=0, max_value=3), st.just(0.0)
            ),
        ),
        max_size=60,
    ),
)
def test_shedding_property(capacity: int, ops: list[tuple[str, str, int, float]]) -> None:
    """Under random pushes (with pops and re-keys mixed in) the queue never exceeds its
    capacity, sheds exactly the worst entry, and never sheds priority 0 while a lower-priority
    entry is queued."""
    q = make_queue(capacity)
    queued: set[StepRun] = set()

    def key(s: StepRun) -> tuple[int, float, int]:
        return (s.run.priority, s.run.deadline, s.seq)

    for op, workflow, priority, trigger_at in ops:
        if op == "push":
            new = step(workflow, priority, trigger_at)
            candidates = queued | {new}
            victim = q.push(new)  # gives ``new`` its sequence number
            worst = max(candidates, key=key) if len(queued) >= capacity else None
            assert victim is worst
            if victim is not None:
                assert victim.handle is None
                if victim.run.priority == 0:
                    assert all(s.run.priority == 0 for s in candidates)
                candidates.discard(victim)
            queued = candidates
        elif op == "pop":
            lane = q.best_lane()
            if queued:
                assert lane is not None
                got = q.pop_from(lane)
                assert got is min(queued, key=key)
                queued.discard(got)
            else:
                assert lane is None
        elif queued:  # rekey the oldest queued entry
            target = min(queued, key=lambda s: s.seq)
            old = target.run.priority
            target.run.priority = priority
            q.rekey(target, old, priority)
        assert len(q) <= capacity
        assert len(q) == len(queued)
        expected_depth: dict[int, int] = {}
        for s in queued:
            expected_depth[s.run.priority] = expected_depth.get(s.run.priority, 0) + 1
        assert q.depth_by_priority() == dict(sorted(expected_depth.items()))
    assert drain(q) == sorted(queued, key=key)
    assert q.statistics().size == 0


# -- re-keying and removal --------------------------------------------------------------------


def test_rekey_moves_an_entry_at_once_and_keeps_depth_counts() -> None:
    q = make_queue()
    a, b, c = step("alpha", 2), step("beta", 2), step("alpha", 1)
    for s in (a, b, c):
        q.push(s)
    assert q.depth_by_priority() == {1: 1, 2: 2}

    b.run.priority = 0  # the coordinator updates the run, then re-keys its queued steps
    q.rekey(b, 2, 0)
    assert q.depth_by_priority() == {0: 1, 1: 1, 2: 1}
    assert q.best_lane() is q.lanes["beta"]
    assert q.lanes["beta"].heap.peek() is b
    assert b.handle is not None
    assert q.lanes["beta"].heap.key(b.handle) == (0, 1.0, b.seq)

    c.run.priority = 3  # increase-key too
    q.rekey(c, 1, 3)
    assert q.depth_by_priority() == {0: 1, 2: 1, 3: 1}

    q.rekey(a, 2, 2)  # same priority: nothing changes
    assert q.depth_by_priority() == {0: 1, 2: 1, 3: 1}
    assert drain(q) == [b, a, c]
    assert q.depth_by_priority() == {}


def test_rekey_of_an_unqueued_step_is_a_no_op() -> None:
    q = make_queue()
    s = step("alpha", 2)
    q.rekey(s, 2, 0)
    assert len(q) == 0
    assert q.depth_by_priority() == {}


def test_remove_drops_the_entry_and_its_count() -> None:
    q = make_queue()
    a, b = step("alpha", 1), step("beta", 2)
    q.push(a)
    q.push(b)
    q.remove(a)
    assert a.handle is None
    q.remove(a)  # already gone: harmless
    assert len(q) == 1
    assert q.depth_by_priority() == {2: 1}
    assert drain(q) == [b]


# -- statistics -------------------------------------------------------------------------------


def test_statistics() -> None:
    q = make_queue(capacity=4)
    assert q.statistics() == QueueStatistics(
        size=0,
        capacity=4,
        depth_by_priority={},
        depth_by_workflow={"alpha": 0, "beta": 0},
        running_by_workflow={"alpha": 0, "beta": 0},
        shed=0,
    )
    entries = [step("alpha", 0), step("alpha", 2), step("beta", 2), step("beta", 1)]
    for s in entries:
        q.push(s)
    q.push(step("alpha", 1))  # full: sheds the newest priority-2 entry (beta's)
    lane = q.best_lane()
    assert lane is q.lanes["alpha"]
    q.pop_from(lane)
    lane.running += 1  # what the dispatcher does with a popped step
    assert q.statistics() == QueueStatistics(
        size=3,
        capacity=4,
        depth_by_priority={1: 2, 2: 1},
        depth_by_workflow={"alpha": 2, "beta": 1},
        running_by_workflow={"alpha": 1, "beta": 0},
        shed=1,
    )
    assert len(q) == 3
