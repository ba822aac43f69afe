"""Chooses the storage-record builders: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap` (``TICKFLOW_NO_EXTENSIONS``); the compiled module is
``_records_py.py`` cythonized with typed locals (``_records_c.pxd``). Compiled only with the
compiled runs and symbols, whose typed fields it reads.
"""

from __future__ import annotations

from .heap import NO_EXTENSIONS
from .runs import RUNS_IMPLEMENTATION
from .symbols import SYMBOLS_IMPLEMENTATION

__all__ = [
    "RECORDS_IMPLEMENTATION",
    "FinishedRuns",
    "RunRows",
    "clean_text",
    "run_record",
    "run_rows",
    "steps_json",
    "symbol_record",
    "symbol_rows",
]

if NO_EXTENSIONS or "python" in (RUNS_IMPLEMENTATION, SYMBOLS_IMPLEMENTATION):
    from ._records_py import (
        FinishedRuns,
        RunRows,
        clean_text,
        run_record,
        run_rows,
        steps_json,
        symbol_record,
        symbol_rows,
    )

    RECORDS_IMPLEMENTATION = "python"
else:
    try:
        from ._records_c import (  # type: ignore[assignment]
            FinishedRuns,
            RunRows,
            clean_text,
                run_record,
            run_rows,
            steps_json,
            symbol_record,
            symbol_rows,
        )

        RECORDS_IMPLEMENTATION = "cython"
    except ImportError:  # not built
        from ._records_py import (
            FinishedRuns,
            RunRows,
            clean_text,
                run_record,
            run_rows,
            steps_json,
            symbol_record,
            symbol_rows,
        )

        RECORDS_IMPLEMENTATION = "python"
