"""The symbol state table: one row per symbol (phase, status, priority, latest tick).

The engine reads and changes rows only through :class:`SymbolTable`, so the storage layer can
back it with SQLite without the engine noticing; ``listener`` hears every change. The classes
live in :mod:`fastpath.symbols` (compiled, with a pure-Python twin): every accepted tick and
every run's start and end go through them.
"""

from __future__ import annotations

from fastpath.symbols import Phase, SymbolRow, SymbolState, SymbolStatus, SymbolTable

__all__ = ["Phase", "SymbolRow", "SymbolState", "SymbolStatus", "SymbolTable"]
