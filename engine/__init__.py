"""tickflow engine: the domain core, its storage, sources and config, and the service around it.

Layers, each importing only downward (checked by import-linter in ``make lint``; see
docs/architecture.md): ``engine.service`` -> ``engine.{config,sources,storage,intake}`` ->
``engine.core`` -> ``fastpath``.
"""

from fastpath._choose import compiled_in_place

# Before anything imports them: the engine's compiled modules are one .py each, compiled in place
# under the same name; this picks the build for all of them at once (see compiled_in_place).
COMPILED_MODULES = (
    "core/counters",
    "core/symbols",
    "core/runs",
    "core/ready",
    "core/records",
    "core/runlog",
    "core/dispatcher",
    "core/coordinator",
)
IMPLEMENTATION = compiled_in_place(__path__[0], COMPILED_MODULES)

from engine.core.errors import (  # noqa: E402  (the build is chosen first)
    ConfigError,
    EventError,
    IllegalTransition,
    TickflowError,
)

__all__ = [
    "COMPILED_MODULES",
    "IMPLEMENTATION",
    "ConfigError",
    "EventError",
    "IllegalTransition",
    "TickflowError",
    "__version__",
]

__version__ = "0.1.0"
