"""Chooses the storage-record builders: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap` (``TICKFLOW_NO_EXTENSIONS``); the compiled module is
``_records_py.py`` cythonized with typed locals (``_records_c.pxd``). Compiled only with the
compiled runs and symbols, whose typed fields it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose
from .jsonw import JSONW_IMPLEMENTATION
from .runs import RUNS_IMPLEMENTATION
from .symbols import SYMBOLS_IMPLEMENTATION

__all__ = [
    "RECORDS_IMPLEMENTATION",
    "FinishedRuns",
    "JournalLog",
    "clean_text",
    "completed_record",
    "run_record",
    "run_rows",
    "steps_json",
    "symbol_batch",
    "symbol_record",
]

_impl, RECORDS_IMPLEMENTATION = choose(
    "_records_c", "_records_py", RUNS_IMPLEMENTATION, SYMBOLS_IMPLEMENTATION,
    JSONW_IMPLEMENTATION,
)

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._records_py import (
        FinishedRuns,
        JournalLog,
        clean_text,
        completed_record,
        run_record,
        run_rows,
        steps_json,
        symbol_batch,
        symbol_record,
    )
else:
    globals().update({n: getattr(_impl, n) for n in __all__ if not n.endswith("IMPLEMENTATION")})
