"""The root of every error tickflow raises on purpose.

It is defined here, in the lowest layer, so that every layer -- fastpath included -- derives
from one root without importing upward; :mod:`engine.core.errors` re-exports it with the
engine's subclasses.
"""

from __future__ import annotations

__all__ = ["TickflowError"]


class TickflowError(Exception):
    """Root of every error tickflow raises deliberately."""
