"""Workflows compiled from config into what the dispatcher needs on its hot path.

Config structs describe; these objects (:class:`engine.core.runs.StepDef` and
:class:`~engine.core.runs.WorkflowDef`, read by the compiled hot path) execute: actions resolved to
callables, the DAG turned into index lists, timeouts in seconds, and the execution kind (inline,
async, thread) decided once at load instead of per step.
"""

from __future__ import annotations

from engine.config.loader import effective_run_in, resolve_action
from engine.config.schema import Config, Workflow
from engine.core.context import sends_orders_flag
from engine.core.runs import StepDef, WorkflowDef
from engine.core.workflow import ExecKind

__all__ = ["compile_workflow", "compile_workflows"]


def compile_workflow(name: str, wf: Workflow) -> WorkflowDef:
    """Resolve the actions of ``wf``, order its steps topologically and index the DAG."""
    order = wf.topological_order()
    index = {step_name: i for i, step_name in enumerate(order)}
    steps: list[StepDef] = []
    for step_name in order:
        cfg = wf.step(step_name)
        fn = resolve_action(cfg.action)
        kind = ExecKind(effective_run_in(cfg, fn))
        deps = tuple(index[d] for d in cfg.depends_on)
        steps.append(StepDef(index[step_name], cfg, fn, kind, deps, sends_orders_flag(fn)))
    return WorkflowDef(name, wf, tuple(steps))


def compile_workflows(config: Config) -> dict[str, WorkflowDef]:
    return {name: compile_workflow(name, wf) for name, wf in config.workflows.items()}
