"""Runs (DAG instances of a workflow for one symbol) and their step runs, as state machines.

They live in :mod:`fastpath.runs` (compiled, with a pure-Python twin) because every step goes
through them; this module is their name in the engine.
"""

from __future__ import annotations

from fastpath.runs import Run, StepRun

__all__ = ["Run", "StepRun"]
