"""Cluster mode: symbol partitions across daemons over NATS JetStream (docs/cluster.md).

Off by default (``[cluster] enabled``); the single process with SQLite needs none of it, and
``nats-py`` is imported only when cluster mode starts.
"""

from __future__ import annotations

from .partition import (
    fnv1a32,
    parse_subject,
    partition_filter,
    partition_of,
    stream_subjects,
    subject_for,
)

__all__ = [
    "fnv1a32",
    "parse_subject",
    "partition_filter",
    "partition_of",
    "stream_subjects",
    "subject_for",
]
