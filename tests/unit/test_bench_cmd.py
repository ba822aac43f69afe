"""Where `tickflow bench` finds the benchmarks: the checkout given, else the engine's own, else
the working directory -- never a directory without benchmarks/suite.py beside engine/."""

from __future__ import annotations

from pathlib import Path

import engine
from engine.service.bench_cmd import find_checkout

ROOT = Path(engine.__file__).resolve().parent.parent


def test_the_engines_own_checkout_is_found_from_anywhere(tmp_path: Path) -> None:
    assert find_checkout(None, tmp_path) == ROOT


def test_a_given_source_must_hold_the_suite_and_the_engine(tmp_path: Path) -> None:
    assert find_checkout(ROOT, tmp_path) == ROOT
    assert find_checkout(tmp_path, ROOT) is None  # never falls back past an explicit --source
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "suite.py").write_text("")
    assert find_checkout(tmp_path, ROOT) is None  # no engine/ beside it
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("")
    assert find_checkout(tmp_path, ROOT) == tmp_path.resolve()
