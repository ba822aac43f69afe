"""The contract between the engine and anything that produces events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from engine.core.events import Event

__all__ = ["Source", "SourceState", "SourceStats", "Submit"]

Submit = Callable[[Event], Awaitable[object]]
"""Hands one event to the engine; awaiting it is how the engine pushes back on a fast source."""

SourceState = Literal["idle", "running", "finished", "cancelled", "failed"]

_NO_REJECTIONS: Mapping[str, int] = MappingProxyType({})


class SourceStats(NamedTuple):
    """A frozen snapshot of a source's counters."""

    name: str
    state: SourceState
    emitted: int
    """Events whose ``submit`` completed."""
    rejected: Mapping[str, int] = _NO_REJECTIONS
    """Input the source refused before submitting, by intake reason (empty if it never refuses)."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@runtime_checkable
class Source(Protocol):
    """Feeds events into the engine.

    ``run`` returns when the source is exhausted and propagates cancellation. It awaits every
    ``submit`` before producing the next event and keeps no queue of its own, so the engine's
    backpressure reaches the producer and memory stays bounded however slow the consumer is.
    """

    name: str

    async def run(self, submit: Submit) -> None: ...

    def statistics(self) -> SourceStats: ...
