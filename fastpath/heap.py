"""Chooses the heap implementation: compiled unless missing or disabled.

``TICKFLOW_NO_EXTENSIONS`` set to anything but ``""``/``"0"`` forces the pure-Python twin, which
is how CI runs the shared suite a second time and how a user rules the extension out.
"""

from __future__ import annotations

import os

__all__ = ["IMPLEMENTATION", "NO_EXTENSIONS", "PriorityHeap"]

NO_EXTENSIONS = os.environ.get("TICKFLOW_NO_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS:
    from ._heap_py import PriorityHeap

    IMPLEMENTATION = "python"
else:
    try:
        from ._heap import PriorityHeap  # type: ignore[assignment]

        IMPLEMENTATION = "cython"
    except ImportError:  # not built (an sdist installed without a compiler, or a source tree)
        from ._heap_py import PriorityHeap

        IMPLEMENTATION = "python"
