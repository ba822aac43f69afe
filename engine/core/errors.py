"""The one error root of tickflow and its subclasses.

Every error tickflow raises on purpose derives from :class:`TickflowError`; where the meaning of a
built-in fits, the subclass mixes it in so callers that only know the built-in still catch it.
"""

from __future__ import annotations

from fastpath.errors import TickflowError

__all__ = [
    "BrokerError",
    "ConfigError",
    "DuplicateOrderError",
    "EventError",
    "IllegalTransition",
    "StepTimeout",
    "StorageError",
    "StrategyError",
    "TickflowError",
]


class ConfigError(TickflowError, ValueError):
    """A configuration file is unreadable or invalid.

    ``str()`` names the file, the key path (``$.workflows.x.steps[1]``) and the problem.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.problem = message
        parts = []
        if path is not None:
            parts.append(str(path))
        if key is not None:
            parts.append(f"at {key}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class EventError(TickflowError, ValueError):
    """An incoming event was rejected; ``reason`` is the bounded label used in metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


class IllegalTransition(TickflowError, RuntimeError):
    """A run or step state machine was asked for a transition its table does not allow."""


class StepTimeout(TickflowError, TimeoutError):
    """A step ran past its ``timeout_ms``."""


class StorageError(TickflowError, OSError):
    """The state database cannot be opened, migrated or written; the message names the file."""


class StrategyError(TickflowError, ValueError):
    """A strategy step was misconfigured, wired to the wrong inputs, or broke an order rule
    (e.g. sent an order from a step not marked ``@sends_orders``)."""


class BrokerError(TickflowError, ValueError):
    """An order, or a broker's configuration or snapshot, is invalid."""


class DuplicateOrderError(BrokerError):
    """A client order id was reused for a different order (symbol, side or quantity differ)."""
