"""Chooses the per-symbol state implementation: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap` (``TICKFLOW_NO_EXTENSIONS``); the compiled module is
``_symbols_py.py`` cythonized with typed fields (``_symbols_c.pxd``).
"""

from __future__ import annotations

from .heap import NO_EXTENSIONS

__all__ = [
    "SYMBOLS_IMPLEMENTATION",
    "MarketData",
    "Phase",
    "SymbolRow",
    "SymbolState",
    "SymbolStatus",
    "SymbolTable",
]

if NO_EXTENSIONS:
    from ._symbols_py import MarketData, Phase, SymbolRow, SymbolState, SymbolStatus, SymbolTable

    SYMBOLS_IMPLEMENTATION = "python"
else:
    try:
        from ._symbols_c import (  # type: ignore[assignment]
            MarketData,
            Phase,
            SymbolRow,
            SymbolState,
            SymbolStatus,
            SymbolTable,
        )

        SYMBOLS_IMPLEMENTATION = "cython"
    except ImportError:  # not built
        from ._symbols_py import (
            MarketData,
            Phase,
            SymbolRow,
            SymbolState,
            SymbolStatus,
            SymbolTable,
        )

        SYMBOLS_IMPLEMENTATION = "python"
