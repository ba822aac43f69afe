"""The engine's per-step path has two builds of one source: the choosers pick the right one.

``fastpath/_runs_py.py``, ``_flow_py.py``, ``_symbols_py.py``, ``_counters_py.py`` and
``_records_py.py`` are the pure-Python twins;
the ``_c.py`` files are symlinks to them that the build cythonizes with typed ``.pxd`` layouts. The
behaviour of both is covered by the whole unit suite, which ``make test-pure`` runs again with
``TICKFLOW_NO_EXTENSIONS=1``; here: the wiring.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastpath
from fastpath import counters, flow, records, runs, symbols

FASTPATH = Path(fastpath.__file__).parent
NO_EXT = os.environ.get("TICKFLOW_NO_EXTENSIONS", "") not in ("", "0")
PAIRS = {
    "runs": ("Run", "StepRun", "Lane", "ReadyQueue"),
    "flow": ("Agent", "CoordinatorCore", "DispatcherCore"),
    "symbols": ("SymbolState", "SymbolTable", "MarketData"),
    "counters": ("StepCounters", "WorkflowCounters"),
    "records": ("FinishedRuns", "JournalLog"),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_compiled_source_is_the_pure_twin(name: str) -> None:
    compiled, pure = FASTPATH / f"_{name}_c.py", FASTPATH / f"_{name}_py.py"
    assert compiled.is_symlink()
    assert compiled.resolve() == pure.resolve()


def test_choosers_report_the_implementation_in_use() -> None:
    expected = "python" if NO_EXT else "cython"
    assert expected == runs.RUNS_IMPLEMENTATION
    assert expected == flow.FLOW_IMPLEMENTATION
    assert expected == symbols.SYMBOLS_IMPLEMENTATION
    assert expected == counters.COUNTERS_IMPLEMENTATION
    assert expected == records.RECORDS_IMPLEMENTATION
    suffix = "_py" if NO_EXT else "_c"
    assert runs.Run.__module__ == f"fastpath._runs{suffix}"
    assert flow.DispatcherCore.__module__ == f"fastpath._flow{suffix}"


@pytest.mark.skipif(NO_EXT, reason="the compiled build is deliberately out of play")
@pytest.mark.parametrize(("name", "classes"), sorted(PAIRS.items()))
def test_both_builds_expose_the_same_public_names(name: str, classes: tuple[str, ...]) -> None:
    pure = importlib.import_module(f"fastpath._{name}_py")
    compiled = importlib.import_module(f"fastpath._{name}_c")
    assert compiled.__file__ is not None
    assert compiled.__file__.endswith(".so")
    for cls in classes:
        py_names = {n for n in dir(getattr(pure, cls)) if not n.startswith("_")}
        c_names = {n for n in dir(getattr(compiled, cls)) if not n.startswith("_")}
        assert py_names <= c_names, (cls, py_names - c_names)


def test_environment_variable_forces_the_python_twins() -> None:
    env = {**os.environ, "TICKFLOW_NO_EXTENSIONS": "1"}
    code = (
        "import fastpath.flow as f, fastpath.runs as r, fastpath.symbols as s;"
        " print(r.RUNS_IMPLEMENTATION, f.FLOW_IMPLEMENTATION, s.SYMBOLS_IMPLEMENTATION)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["python", "python", "python"]


def test_a_step_run_refuses_unknown_attributes() -> None:
    from engine.runs import StepRun

    with pytest.raises(AttributeError):
        StepRun.__new__(StepRun).no_such_field = 1  # type: ignore[attr-defined]
