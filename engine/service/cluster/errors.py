"""The cluster's errors, under the one root :class:`TickflowError`."""

from __future__ import annotations

from engine.core.errors import TickflowError

__all__ = ["CheckpointError", "ClusterConfigError", "ClusterError", "LeaseLost"]


class ClusterError(TickflowError, RuntimeError):
    """Cluster mode cannot go on: the NATS server is unreachable or refused a request."""


class ClusterConfigError(ClusterError, ValueError):
    """A stream, consumer or bucket the server created differs from the one asked for.

    nats-server 2.9 silently drops config fields it does not know (a consumer's
    ``filter_subjects``, which then filters nothing): every create is read back and compared.
    """


class LeaseLost(ClusterError):
    """This node no longer owns a partition: a renewal failed, or a newer lease revision (the
    fencing token) exists. Whatever it was doing for that partition must stop at once."""


class CheckpointError(ClusterError, ValueError):
    """A partition's checkpoint cannot be read or restored here (an unknown format, damaged or
    foreign content, state this node still holds): nothing of it was applied."""
