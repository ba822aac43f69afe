"""The ready queue: one fastpath heap lane per workflow under one global order.

Entries are ready steps keyed ``(priority, deadline, seq)``. Every lane shares one sequence
counter, so comparing the lanes' heads gives the global order, and a lane whose workflow is at
its ``max_concurrent`` (or paused) is simply skipped: its head waits without blocking the
steps of other workflows behind it.

Capacity is global. When it is reached, the worst entry of all (lowest priority, then latest
deadline, then newest) is shed -- which is the incoming entry itself if nothing queued is worse.
A priority-0 entry is therefore only ever shed when everything queued is priority 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from fastpath import PriorityHeap

from .runs import StepRun

__all__ = ["Lane", "QueueStatistics", "ReadyQueue"]

_HEAD = -math.inf  # the deadline of a preempted step re-queued at the head of its level


class Lane:
    __slots__ = ("heap", "max_concurrent", "name", "owner", "paused", "running")

    def __init__(self, name: str, max_concurrent: int, capacity: int, owner: object) -> None:
        self.name = name
        self.owner = owner  # the ReadyQueue it belongs to
        self.max_concurrent = max_concurrent
        # Each lane can hold the whole global capacity (plus room for preempted steps coming
        # back), so a lane never refuses; the global bound is enforced by ReadyQueue.
        self.heap = PriorityHeap(capacity)
        self.running = 0
        self.paused = False

    @property
    def eligible(self) -> bool:
        return bool(self.heap) and self.running < self.max_concurrent and not self.paused


class QueueStatistics(msgspec.Struct, frozen=True, kw_only=True):
    size: int
    capacity: int
    depth_by_priority: dict[int, int]
    depth_by_workflow: dict[str, int]
    running_by_workflow: dict[str, int]
    shed: int


class ReadyQueue:
    def __init__(self, capacity: int, lanes: Iterable[tuple[str, int]], spare: int = 64) -> None:
        self.capacity = capacity
        self._lane_capacity = capacity + spare
        self.lanes: dict[str, Lane] = {}
        self._lane_list: list[Lane] = []
        for name, max_concurrent in lanes:
            self.add_lane(name, max_concurrent)
        self._seq = 0
        self._size = 0
        self._depth: dict[int, int] = {}
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

    # -- adding -----------------------------------------------------------------------------

    def push(self, step: StepRun) -> StepRun | None:
        """Queue a ready step. Returns the step shed to make room (possibly ``step`` itself)."""
        run = step.run
        if step.seq < 0:
            step.seq = self._seq
            self._seq += 1
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
            self._dec_depth(victim.run.priority)
            self._size -= 1
            self.shed += 1
        wf = step.run.workflow
        lane = wf.lane
        if lane is None or lane.owner is not self:  # a definition not bound to this queue yet
            lane = wf.lane = self.lanes[wf.name]
        step.handle = lane.heap.push_keyed(priority, deadline, step.seq, step)
        self._size += 1
        self._depth[priority] = self._depth.get(priority, 0) + 1
        return victim

    # -- taking -----------------------------------------------------------------------------

    def best_lane(self) -> Lane | None:
        """The eligible lane whose head comes first in the global order."""
        best: Lane | None = None
        best_key: tuple[int, float, int] | None = None
        for lane in self._lane_list:
            if lane.heap and lane.running < lane.max_concurrent and not lane.paused:
                key = lane.heap.peek_key()
                if best_key is None or key < best_key:
                    best, best_key = lane, key
        return best

    def pop_from(self, lane: Lane) -> StepRun:
        step: StepRun = lane.heap.pop()
        step.handle = None
        self._size -= 1
        self._dec_depth(step.run.priority)
        return step

    def remove(self, step: StepRun) -> None:
        if step.handle is None:
            return
        step.run.workflow.lane.heap.remove(step.handle)
        step.handle = None
        self._size -= 1
        self._dec_depth(step.run.priority)

    def rekey(self, step: StepRun, old_priority: int, new_priority: int) -> None:
        """Move a queued step to a new priority at once (decrease- or increase-key)."""
        if step.handle is None or old_priority == new_priority:
            return
        step.run.workflow.lane.heap.update(step.handle, priority=new_priority)
        self._dec_depth(old_priority)
        self._depth[new_priority] = self._depth.get(new_priority, 0) + 1

    # -- reading ----------------------------------------------------------------------------

    def depth_by_priority(self) -> dict[int, int]:
        return {p: n for p, n in sorted(self._depth.items()) if n}

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
        worst_key: tuple[int, float, int] | None = None
        for lane in self._lane_list:
            if lane.heap:
                key = lane.heap.peek_worst_key()
                if worst_key is None or key > worst_key:
                    worst, worst_key = lane, key
        return worst

    def _dec_depth(self, priority: int) -> None:
        n = self._depth.get(priority, 0) - 1
        if n > 0:
            self._depth[priority] = n
        else:
            self._depth.pop(priority, None)
