"""tickflow engine: config, events, scheduler, dispatcher, agents, runs, storage, metrics, ops."""

from .errors import ConfigError, EventError, IllegalTransition, TickflowError

__all__ = ["ConfigError", "EventError", "IllegalTransition", "TickflowError", "__version__"]

__version__ = "0.1.0"
