"""Read back what the server created and compare it with what was asked for.

nats-server 2.9 accepts a JetStream config with fields it does not know and silently drops
them: a stream's ``subject_transform``, a consumer's ``filter_subjects`` (which then filters
nothing, so a partition's consumer would see every partition). Every create in cluster mode goes
through :func:`check_readback` with the config the server returned.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import ClusterConfigError

__all__ = ["check_readback"]


def _same(wanted: object, got: object) -> bool:
    if isinstance(wanted, float) or isinstance(got, float):
        # durations come back as nanoseconds converted to seconds: equal to a microsecond
        try:
            return abs(float(wanted) - float(got)) < 1e-6  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
    if isinstance(wanted, (list, tuple)) and isinstance(got, (list, tuple)):
        return list(wanted) == list(got)
    if hasattr(wanted, "value") and not hasattr(got, "value"):
        return bool(wanted.value == got)
    if hasattr(got, "value") and not hasattr(wanted, "value"):
        return bool(got.value == wanted)
    return wanted == got


def check_readback(
    kind: str, name: str, wanted: Mapping[str, object], returned: Mapping[str, object]
) -> None:
    """Raise :class:`ClusterConfigError` naming every field of ``wanted`` that ``returned``
    lacks (the server dropped it) or holds with another value."""
    problems = []
    for key, value in wanted.items():
        if value is None:
            continue
        if key not in returned or returned[key] is None:
            problems.append(f"{key}: asked {value!r}, the server dropped it")
        elif not _same(value, returned[key]):
            problems.append(f"{key}: asked {value!r}, the server has {returned[key]!r}")
    if problems:
        raise ClusterConfigError(
            f"{kind} {name!r} differs from the config asked for "
            f"(is the server too old for it?): " + "; ".join(problems)
        )
