"""Chooses the per-symbol state implementation: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap` (``TICKFLOW_NO_EXTENSIONS``); the compiled module is
``_symbols_py.py`` cythonized with typed fields (``_symbols_c.pxd``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose

__all__ = [
    "SYMBOLS_IMPLEMENTATION",
    "MarketData",
    "Phase",
    "SymbolRow",
    "SymbolState",
    "SymbolStatus",
    "SymbolTable",
]

_impl, SYMBOLS_IMPLEMENTATION = choose("_symbols_c", "_symbols_py")

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._symbols_py import (
        MarketData,
        Phase,
        SymbolRow,
        SymbolState,
        SymbolStatus,
        SymbolTable,
    )
else:
    globals().update({n: getattr(_impl, n) for n in __all__ if not n.endswith("IMPLEMENTATION")})
