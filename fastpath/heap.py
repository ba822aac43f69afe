"""Chooses the heap implementation: compiled unless missing or disabled.

``TICKFLOW_NO_EXTENSIONS`` set to anything but ``""``/``"0"`` forces the pure-Python twin, which
is how CI runs the shared suite a second time and how a user rules the extension out (the rule
of every chooser, :mod:`fastpath._choose`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import NO_EXTENSIONS, choose

__all__ = ["IMPLEMENTATION", "NO_EXTENSIONS", "PriorityHeap"]

_impl, IMPLEMENTATION = choose("_heap", "_heap_py")

if TYPE_CHECKING:  # the twin's types; the same name at run time, from the chosen module
    from ._heap_py import PriorityHeap
else:
    PriorityHeap = _impl.PriorityHeap
