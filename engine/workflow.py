"""Workflows compiled from config into what the dispatcher needs on its hot path.

Config structs describe; these objects execute: actions resolved to callables, the DAG turned
into index lists, timeouts in seconds, and the execution kind (inline, async, thread) decided
once at load instead of per step.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .config import Config, Retry, Route, Workflow, effective_run_in, resolve_action
from .context import sends_orders_flag

__all__ = ["ExecKind", "StepDef", "WorkflowDef", "compile_workflows"]


class ExecKind(enum.Enum):
    INLINE = "inline"  # a cheap plain function, called on the loop; cannot be interrupted
    ASYNC = "async"  # awaited on the loop; preemption and timeouts cancel it at an await
    THREAD = "thread"  # run in the thread pool; a timeout abandons the result, never the thread


class StepDef:
    __slots__ = (
        "action",
        "counters",
        "dependents",
        "deps",
        "fn",
        "index",
        "kind",
        "name",
        "params",
        "preemptible",
        "retry",
        "sends_orders",
        "timeout_s",
    )

    def __init__(
        self,
        index: int,
        name: str,
        action: str,
        fn: Callable[..., Any],
        kind: ExecKind,
        timeout_s: float,
        retry: Retry,
        preemptible: bool,
        params: Mapping[str, Any],
        deps: tuple[int, ...],
    ) -> None:
        self.index = index
        self.name = name
        self.action = action
        self.fn = fn
        self.kind = kind
        self.timeout_s = timeout_s
        self.retry = retry
        # Inline steps never suspend, so nothing could interrupt them mid-way anyway.
        self.preemptible = preemptible and kind is not ExecKind.INLINE
        self.params = params
        self.deps = deps
        self.sends_orders = sends_orders_flag(fn)  # decided once, read for every finished step
        self.dependents: tuple[int, ...] = ()
        self.counters: Any = None  # the engine's StepCounters, bound once (no lookup per step)

    def __repr__(self) -> str:
        return f"<StepDef {self.name} {self.kind.value}>"


class WorkflowDef:
    __slots__ = (
        "counters",
        "deadline_s",
        "enabled",
        "lane",
        "max_concurrent",
        "name",
        "on_busy",
        "priority",
        "roots",
        "route",
        "steps",
    )

    def __init__(self, name: str, wf: Workflow) -> None:
        self.name = name
        self.priority = wf.priority
        self.route: Route = wf.route
        self.max_concurrent = wf.max_concurrent
        self.on_busy = wf.on_busy
        self.deadline_s = wf.deadline_ms / 1000.0
        self.enabled = wf.enabled
        self.counters: Any = None  # the engine's WorkflowCounters, bound once
        self.lane: Any = None  # its ready-queue lane, bound by the coordinator
        order = wf.topological_order()
        index = {step_name: i for i, step_name in enumerate(order)}
        steps: list[StepDef] = []
        for step_name in order:
            cfg = wf.step(step_name)
            fn = resolve_action(cfg.action)
            steps.append(
                StepDef(
                    index=index[step_name],
                    name=step_name,
                    action=cfg.action,
                    fn=fn,
                    kind=ExecKind(effective_run_in(cfg, fn)),
                    timeout_s=cfg.timeout_ms / 1000.0,
                    retry=cfg.retry,
                    preemptible=cfg.preemptible,
                    params=MappingProxyType(dict(cfg.params)),
                    deps=tuple(index[d] for d in cfg.depends_on),
                )
            )
        for step in steps:
            step.dependents = tuple(s.index for s in steps if step.index in s.deps)
        self.steps: tuple[StepDef, ...] = tuple(steps)
        self.roots = tuple(s.index for s in steps if not s.deps)

    def run_priority(self, symbol_priority: int) -> int:
        """A run queues at its symbol's priority, but never less urgently than its workflow's:
        the workflow's priority is a floor, an urgent symbol lifts its runs above it."""
        return min(self.priority, symbol_priority)

    def __repr__(self) -> str:
        return f"<WorkflowDef {self.name} p{self.priority} steps={len(self.steps)}>"


def compile_workflows(config: Config) -> dict[str, WorkflowDef]:
    return {name: WorkflowDef(name, wf) for name, wf in config.workflows.items()}
