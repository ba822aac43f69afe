"""The rule every chooser of fastpath follows, in one place.

A chooser (:mod:`fastpath.heap`, :mod:`fastpath.runs`, ...) uses the compiled module unless it
is not built, a module it builds on is not compiled, or ``TICKFLOW_NO_EXTENSIONS`` is set to
anything but ``""``/``"0"`` -- which is how CI runs the shared suites a second time on the
pure-Python twins and how a user rules the extensions out.
"""

from __future__ import annotations

import os
from importlib import import_module
from types import ModuleType

__all__ = ["NO_EXTENSIONS", "choose"]

NO_EXTENSIONS = os.environ.get("TICKFLOW_NO_EXTENSIONS", "") not in ("", "0")


def choose(compiled: str, pure: str, *needs: str) -> tuple[ModuleType, str]:
    """``(module, "cython")`` for ``fastpath.<compiled>``, or ``(module, "python")`` for
    ``fastpath.<pure>``. ``needs``: the implementations ("cython"/"python") of the modules the
    compiled one is typed against; a half-built tree falls back to the twins as a whole."""
    if not NO_EXTENSIONS and "python" not in needs:
        try:
            return import_module(f"fastpath.{compiled}"), "cython"
        except ImportError:  # not built (an sdist installed without a compiler, a source tree)
            pass
    return import_module(f"fastpath.{pure}"), "python"
