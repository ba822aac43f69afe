"""``[strategies] paths``: the folders of the user's strategy modules, put on the import path
before actions resolve.

A user keeps ``mystrats.py`` (or a package) beside the config and names its actions
``mystrats:fetch``; the loader resolves each listed folder against the config file's own
folder and puts it at the front of ``sys.path`` (like Python does for a script's folder), so
``tickflow run``, ``validate``, ``replay``, ``backtest``, reload and the systemd unit all import
the same modules whatever the working directory, without ``PYTHONPATH``; an unimportable
action's error names these folders.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["folder_errors", "resolve_folders", "search_hint", "use_strategy_paths"]


def resolve_folders(paths: Iterable[str] | None, base_dir: Path) -> tuple[str, ...]:
    """``paths`` as absolute folders: ``~`` expanded, relative ones against ``base_dir``.

    ``None`` (the key unset) is ``base_dir`` itself, unless it is a package's folder: a config
    shipped inside a package (``engine/default.toml``) would otherwise make the package's own
    folder an import root, and its modules importable twice under two names.
    """
    if paths is None:
        if (base_dir / "__init__.py").exists():
            return ()
        paths = (".",)
    return tuple(
        os.path.normpath(os.path.join(base_dir, os.path.expanduser(p))) for p in paths
    )


def folder_errors(folders: Iterable[str]) -> Iterator[tuple[int, str]]:
    """``(index, problem)`` for every folder that cannot hold strategy modules."""
    for index, folder in enumerate(folders):
        if not os.path.exists(folder):
            yield index, f"strategy folder {folder} does not exist"
        elif not os.path.isdir(folder):
            yield index, f"strategy path {folder} is not a folder"


def use_strategy_paths(folders: Iterable[str]) -> tuple[str, ...]:
    """Put ``folders`` (absolute, as in a loaded config's ``strategies.paths``) at the front of
    ``sys.path``, the first listed searched first; return them.

    Idempotent: a folder already on the path is moved, not duplicated. Folders of an earlier
    config stay (a module already imported from them stays imported anyway). The backtest and
    any tool that builds an engine from a loaded config get this from the loader; call it
    directly only for a config built by hand.
    """
    chosen = tuple(dict.fromkeys(folders))
    for folder in reversed(chosen):
        while folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    # A module file created since the last import must be found: the finders cache listings.
    importlib.invalidate_caches()
    return chosen


def search_hint(searched: tuple[str, ...] | None) -> str:
    """Where a module was looked for, for the error of an action that cannot be imported
    (``None``: not known, say nothing)."""
    if searched is None:
        return ""
    if not searched:
        return " (no strategy paths: searched the installed packages)"
    return f" (searched the strategy paths {', '.join(searched)}, then the installed packages)"
