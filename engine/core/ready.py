"""The ready queue: ready steps in one global ``(priority, deadline, seq)`` order.

One fastpath heap lane per workflow (:class:`~engine.core.runs.Lane`), keyed ``(priority,
deadline, seq)``. Every lane shares one sequence counter, so comparing the lanes' heads gives the
global order, and a lane whose workflow is at its ``max_concurrent`` (or paused) is simply
skipped: its head waits without blocking the steps of other workflows behind it.

Capacity is global. When it is reached, the worst entry of all (lowest priority, then latest
deadline, then newest) is shed -- which is the incoming entry itself if nothing queued is worse.
A priority-0 entry is therefore only ever shed when everything queued is priority 0.

Compiled in place from this file and ``ready.pxd`` like the rest of the hot core (see
engine/core/runs.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from engine.core.runs import Lane, StepRun
from engine.core.stats import QueueStatistics

__all__ = ["ReadyQueue"]

_HEAD = -math.inf  # the deadline of a preempted step re-queued at the head of its level


class ReadyQueue:
    """Ready steps in global ``(priority, deadline, seq)`` order, one lane per workflow."""

    def __init__(self, capacity: int, lanes: Iterable[tuple[str, int]], spare: int = 64) -> None:
        self.capacity = capacity
        self._lane_capacity = capacity + spare
        self.lanes: dict[str, Lane] = {}
        self._lane_list: list[Lane] = []
        for name, max_concurrent in lanes:
            self.add_lane(name, max_concurrent)
        self._seq = 0
        self._size = 0
        self.shed = 0

    def add_lane(self, name: str, max_concurrent: int) -> Lane:
        lane = self.lanes.get(name)
        if lane is None:
            lane = Lane(name, max_concurrent, self._lane_capacity, self)
            self.lanes[name] = lane
            self._lane_list.append(lane)
        else:
            lane.max_concurrent = max_concurrent
        return lane

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    # -- adding -----------------------------------------------------------------------------

    def push(self, step: StepRun) -> StepRun | None:
        """Queue a ready step. Returns the step shed to make room (possibly ``step`` itself)."""
        if step.seq < 0:
            step.seq = self._seq
            self._seq += 1
        run = step.run
        return self._push(step, run.priority, run.deadline)

    def requeue_front(self, step: StepRun) -> StepRun | None:
        """Put a preempted step back at the head of its priority level, with its old age."""
        return self._push(step, step.run.priority, _HEAD)

    def _push(self, step: StepRun, priority: int, deadline: float) -> StepRun | None:
        victim: StepRun | None = None
        if self._size >= self.capacity:
            worst_lane = self._worst_lane()
            assert worst_lane is not None
            if worst_lane.heap.peek_worst_key() < (priority, deadline, step.seq):
                self.shed += 1
                return step  # everything queued is more urgent than the newcomer
            victim = worst_lane.heap.pop_worst()
            assert victim is not None
            victim.handle = None
            self._size -= 1
            self.shed += 1
        wf = step.run.workflow
        lane = wf.lane
        if lane is None or lane.owner is not self:  # a definition not bound to this queue yet
            lane = wf.lane = self.lanes[wf.name]
        step.handle = lane.heap.push_keyed(priority, deadline, step.seq, step)
        self._size += 1
        return victim

    # -- taking -----------------------------------------------------------------------------

    def best_lane(self) -> Lane | None:
        """The eligible lane whose head comes first in the global order."""
        best: Lane | None = None
        for lane in self._lane_list:
            if (
                lane.running < lane.max_concurrent
                and not lane.paused
                and lane.heap
                and (best is None or lane.heap.head_before(best.heap))
            ):
                best = lane
        return best

    def pop_from(self, lane: Lane) -> StepRun:
        step: StepRun = lane.heap.pop()
        step.handle = None
        self._size -= 1
        return step

    def remove(self, step: StepRun) -> None:
        if step.handle is None:
            return
        step.run.workflow.lane.heap.remove(step.handle)
        step.handle = None
        self._size -= 1

    def rekey(self, step: StepRun, old_priority: int, new_priority: int) -> None:
        """Move a queued step to a new priority at once (decrease- or increase-key)."""
        if step.handle is None or old_priority == new_priority:
            return
        step.run.workflow.lane.heap.update(step.handle, priority=new_priority)

    # -- reading ----------------------------------------------------------------------------

    def depth_by_priority(self) -> dict[int, int]:
        """Queued steps by priority: counted when asked (a scrape, a status call), so the hot
        path keeps no per-priority tally."""
        depth: dict[int, int] = {}
        for lane in self._lane_list:
            for step in lane.heap.items():
                priority = step.run.priority
                depth[priority] = depth.get(priority, 0) + 1
        return dict(sorted(depth.items()))

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            size=self._size,
            capacity=self.capacity,
            depth_by_priority=self.depth_by_priority(),
            depth_by_workflow={lane.name: len(lane.heap) for lane in self._lane_list},
            running_by_workflow={lane.name: lane.running for lane in self._lane_list},
            shed=self.shed,
        )

    def _worst_lane(self) -> Lane | None:
        worst: Lane | None = None
        worst_key: Any = None
        for lane in self._lane_list:
            if lane.heap:
                key = lane.heap.peek_worst_key()
                if worst is None or key > worst_key:
                    worst = lane
                    worst_key = key
        return worst
