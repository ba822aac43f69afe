"""Chooses the storage-record builders: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap` (``TICKFLOW_NO_EXTENSIONS``); the compiled module is
``_records_py.py`` cythonized with typed locals (``_records_c.pxd``). Compiled only with the
compiled runs and symbols, whose typed fields it reads.
"""

from __future__ import annotations

from types import ModuleType

from . import _records_py
from .heap import NO_EXTENSIONS
from .runs import RUNS_IMPLEMENTATION
from .symbols import SYMBOLS_IMPLEMENTATION

__all__ = [
    "RECORDS_IMPLEMENTATION",
    "FinishedRuns",
    "clean_text",
    "run_record",
    "run_rows",
    "steps_json",
    "symbol_record",
    "symbol_rows",
]


def _choose() -> tuple[ModuleType, str]:
    if NO_EXTENSIONS or "python" in (RUNS_IMPLEMENTATION, SYMBOLS_IMPLEMENTATION):
        return _records_py, "python"
    try:
        from . import _records_c
    except ImportError:  # not built
        return _records_py, "python"
    return _records_c, "cython"


_impl, RECORDS_IMPLEMENTATION = _choose()
FinishedRuns = _impl.FinishedRuns
clean_text = _impl.clean_text
run_record = _impl.run_record
run_rows = _impl.run_rows
steps_json = _impl.steps_json
symbol_record = _impl.symbol_record
symbol_rows = _impl.symbol_rows
