"""Event sources: the embedded simulator, file replay, and the contract they share."""

from .base import Source, SourceState, SourceStats, Submit
from .pacing import Pacer
from .replay import ReplayFileError, ReplaySource, detect_format
from .sim import SimMarket, default_symbol_names

__all__ = [
    "Pacer",
    "ReplayFileError",
    "ReplaySource",
    "SimMarket",
    "Source",
    "SourceState",
    "SourceStats",
    "Submit",
    "default_symbol_names",
    "detect_format",
]
