"""Workflows compiled from config into what the dispatcher needs on its hot path.

Config structs describe; these objects (:class:`engine.core.runs.StepDef` and
:class:`~engine.core.runs.WorkflowDef`, read by the compiled hot path) execute: actions resolved to
callables, the DAG turned into index lists, timeouts in seconds, and the execution kind (inline,
async, thread) decided once at load instead of per step.
"""

from __future__ import annotations

import hashlib

from engine.config.loader import effective_run_in, resolve_action
from engine.config.params import decode_params
from engine.config.schema import Config, Workflow
from engine.core.runs import StepDef, WorkflowDef
from engine.core.strategy import sends_orders_flag

__all__ = ["compile_workflow", "compile_workflows"]


def step_seed(seed: int, workflow: str, step: str) -> int:
    """The seed of a step's own rng (``StepContext.rng`` mixes in the run id): stable across
    processes and Python versions, unlike ``hash()``."""
    digest = hashlib.blake2b(f"{seed}\0{workflow}\0{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def compile_workflow(name: str, wf: Workflow, *, seed: int = 0) -> WorkflowDef:
    """Resolve the actions of ``wf``, order its steps topologically and index the DAG.
    ``seed``: the config's ``engine.seed``, from which each step's rng seed derives."""
    order = wf.topological_order()
    index = {step_name: i for i, step_name in enumerate(order)}
    steps: list[StepDef] = []
    for step_name in order:
        cfg = wf.step(step_name)
        fn = resolve_action(cfg.action)
        kind = effective_run_in(cfg, fn)
        deps = tuple(index[d] for d in cfg.depends_on)
        steps.append(
            StepDef(
                index[step_name], cfg, fn, kind, decode_params(fn, cfg.params), deps,
                sends_orders_flag(fn), step_seed(seed, name, step_name),
            )
        )
    return WorkflowDef(name, wf, tuple(steps))


def compile_workflows(config: Config, *, seed: int | None = None) -> dict[str, WorkflowDef]:
    """Every workflow of ``config``; ``seed`` overrides ``config.engine.seed`` (a reload keeps
    the running seed: it is fixed for the process)."""
    if seed is None:
        seed = config.engine.seed
    return {
        name: compile_workflow(name, wf, seed=seed) for name, wf in config.workflows.items()
    }
