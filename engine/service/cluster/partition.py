"""Which partition a symbol belongs to, and the subjects its events travel on.

The publisher computes the partition (``fnv1a32(symbol) % partitions``) instead of asking the
server to map subjects: it equals NATS's own ``partition()`` subject-mapping function, so
every node and any server version agree, and a 2.9 server (which silently drops a stream's
``subject_transform``) needs no mapping at all.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "fnv1a32",
    "parse_subject",
    "partition_filter",
    "partition_of",
    "stream_subjects",
    "subject_for",
]

_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193


def fnv1a32(data: bytes) -> int:
    """32-bit FNV-1a of ``data``, the hash NATS's ``partition()`` mapping uses."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def partition_of(symbol: str, partitions: int) -> int:
    """The partition ``symbol``'s events go to: stable across nodes, processes and releases."""
    return fnv1a32(symbol.encode()) % partitions


def subject_for(prefix: str, partition: int, symbol: str) -> str:
    """``<prefix>.part.<p>.<symbol>``: a symbol is one subject token (the symbol alphabet of
    ``engine.core.events`` has no ``.``, ``*``, ``>`` or whitespace)."""
    return f"{prefix}.part.{partition}.{symbol}"


def stream_subjects(prefix: str) -> str:
    """The one subject filter the stream captures: every partition's events."""
    return f"{prefix}.part.>"


def partition_filter(prefix: str, partition: int) -> str:
    """A partition's durable consumer filter."""
    return f"{prefix}.part.{partition}.>"


def parse_subject(prefix: str, subject: str) -> tuple[int, str]:
    """``(partition, symbol)`` of a subject :func:`subject_for` made; ``ValueError`` otherwise."""
    head = f"{prefix}.part."
    if not subject.startswith(head):
        raise ValueError(f"subject {subject!r} is not under {head}")
    part, sep, symbol = subject[len(head):].partition(".")
    if not sep or not part.isdigit() or not symbol:
        raise ValueError(f"subject {subject!r} is not {head}<partition>.<symbol>")
    return int(part), symbol
