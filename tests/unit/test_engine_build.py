"""The engine's compiled modules have two builds of one source; the right one is picked.

``engine/core/{counters,symbols,runs,flow}.py`` and ``engine/storage/records.py`` are each
compiled in place under their own name with the typed ``.pxd`` beside them. The behaviour of both
builds is covered by the whole unit suite, which ``make test-pure`` runs again with
``TICKFLOW_NO_EXTENSIONS=1``; here: the switch.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import engine

ROOT = Path(engine.__file__).parent.parent
NO_EXT = os.environ.get("TICKFLOW_NO_EXTENSIONS", "") not in ("", "0")


def _module(path: str) -> str:
    return "engine." + path.replace("/", ".")


def test_setup_compiles_exactly_the_modules_the_switch_knows() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    found = [
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "ENGINE_COMPILED" for t in node.targets)
    ]
    assert found == [engine.COMPILED_MODULES]


@pytest.mark.parametrize("path", engine.COMPILED_MODULES)
def test_each_compiled_module_has_its_source_and_layout(path: str) -> None:
    assert (ROOT / "engine" / f"{path}.py").is_file()
    assert (ROOT / "engine" / f"{path}.pxd").is_file()


@pytest.mark.parametrize("path", engine.COMPILED_MODULES)
def test_the_build_in_use_is_the_one_reported(path: str) -> None:
    module = importlib.import_module(_module(path))
    assert module.__file__ is not None
    assert ("python" if NO_EXT else "cython") == engine.IMPLEMENTATION
    assert module.__file__.endswith(".py" if NO_EXT else ".so")


def _implementation_in_child(env: dict[str, str]) -> list[str]:
    code = (
        "import engine, engine.core.coordinator as f, engine.core.records as r;"
        " print(engine.IMPLEMENTATION, f.__file__.endswith('.so'), r.__file__.endswith('.so'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
        cwd=ROOT,
    )
    return out.stdout.split()


def test_environment_variable_forces_the_sources_as_a_whole() -> None:
    env = {**os.environ, "TICKFLOW_NO_EXTENSIONS": "1"}
    assert _implementation_in_child(env) == ["python", "False", "False"]


@pytest.mark.skipif(NO_EXT, reason="the compiled build is deliberately out of play")
def test_the_compiled_build_is_used_when_built() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TICKFLOW_NO_EXTENSIONS"}
    assert _implementation_in_child(env) == ["cython", "True", "True"]


def test_a_step_run_refuses_unknown_attributes() -> None:
    from engine.core.runs import StepRun

    with pytest.raises(AttributeError):
        StepRun.__new__(StepRun).no_such_field = 1  # type: ignore[attr-defined]
