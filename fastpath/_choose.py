"""The rule every chooser of fastpath follows, in one place.

A chooser (:mod:`fastpath.heap`, :mod:`engine.core.runs`, ...) uses the compiled module unless it
is not built, a module it builds on is not compiled, or ``TICKFLOW_NO_EXTENSIONS`` is set to
anything but ``""``/``"0"`` -- which is how CI runs the shared suites a second time on the
pure-Python twins and how a user rules the extensions out.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)
from types import ModuleType

__all__ = ["NO_EXTENSIONS", "choose", "compiled_in_place"]

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


def compiled_in_place(root: str, modules: tuple[str, ...]) -> str:
    """The build of modules compiled under their own names (``x.py`` + ``x.pxd`` -> ``x.so``
    beside it): ``"cython"`` when every one of ``modules`` (paths below ``root`` without
    suffix, e.g. ``"core/runs"``) has its extension and extensions are allowed; otherwise
    ``"python"``, and from then on their folders load ``.py`` sources only, so a half-built
    tree or ``TICKFLOW_NO_EXTENSIONS`` gives the pure build as a whole (the compiled modules
    ``cimport`` each other's types and cannot be mixed with their sources).

    It works by placing a source-only finder in ``sys.path_importer_cache`` for each folder,
    the cache the import system consults for a package's ``__path__`` entries: it must run
    before any of the modules is imported."""
    folders = {os.path.join(root, os.path.dirname(m)) for m in modules}
    built = all(
        any(os.path.exists(os.path.join(root, m + suffix)) for suffix in EXTENSION_SUFFIXES)
        for m in modules
    )
    if built and not NO_EXTENSIONS:
        return "cython"
    for folder in folders:
        sys.path_importer_cache[folder] = FileFinder(
            folder, (SourceFileLoader, SOURCE_SUFFIXES), (SourcelessFileLoader, BYTECODE_SUFFIXES)
        )
    return "python"
