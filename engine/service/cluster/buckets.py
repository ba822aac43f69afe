"""The control plane's KeyValue buckets: created (or opened) and read back before use.

Three buckets per cluster, named after ``[cluster] stream`` so two clusters on one NATS server
(two ``stream`` names) never share one:

``<stream>_lease``
    one key ``p<p>`` per partition, the partition's lease (:mod:`.lease`). TTL = ``lease_ttl_s``
    (the stream's ``max_age``): a lease nobody renews disappears by itself. History 1: only the
    current holder matters, and a revision is a stream sequence, so it still grows
    monotonically across tenures -- the fencing token.
``<stream>_members``
    one key per node (its name, escaped to the KV key alphabet), the node's heartbeat
    (:mod:`.membership`). TTL = ``lease_ttl_s``: a node that stops heartbeating leaves the live
    set by itself. History 1.
``<stream>_orders``
    the order-id registry (:mod:`.orders`). No TTL and keys are never deleted: exactly one
    ``create`` per order id can ever succeed.

The data plane's checkpoint bucket (``<stream>_ckpt``) is named here too, so ``tickflow
cluster status`` and the data plane agree on it; the data plane creates it.

nats-server 2.9 silently drops stream config fields it does not know, and a bucket that
already exists keeps whatever config it was created with: every bucket's config is read back
from the server and compared (:func:`~.readback.check_readback`) before it is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .errors import ClusterConfigError, ClusterError
from .readback import check_readback

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = [
    "ControlBuckets",
    "bucket_names",
    "ensure_bucket",
    "ensure_control_buckets",
    "escape_key",
    "kv_stream",
]

_STREAM_IN_USE: Final = 10058  # "stream name already in use with a different configuration"
_OUTSIDE_KEY_ALPHABET: Final = re.compile(r"[^A-Za-z0-9_-]")


def escape_key(name: str) -> str:
    """``name`` as a KV key: anything but letters, digits, ``_`` and ``-`` becomes ``=XX``
    (its UTF-8 bytes in hex), so ``host:123`` is ``host=3A123``. ``=`` is escaped too, so two
    names never share a key; ``.`` is, so a name is one subject token."""
    if not name:
        raise ValueError("a KV key name must not be empty")
    return _OUTSIDE_KEY_ALPHABET.sub(
        lambda m: "".join(f"={b:02X}" for b in m.group().encode()), name
    )


@dataclass(frozen=True, slots=True)
class BucketNames:
    lease: str
    members: str
    orders: str
    checkpoints: str


def bucket_names(stream: str) -> BucketNames:
    """The buckets of the cluster whose event stream is ``stream``."""
    return BucketNames(
        lease=f"{stream}_lease",
        members=f"{stream}_members",
        orders=f"{stream}_orders",
        checkpoints=f"{stream}_ckpt",
    )


def kv_stream(bucket: str) -> str:
    """The JetStream stream a KV bucket lives in (the KV convention: ``KV_<bucket>``)."""
    return f"KV_{bucket}"


@dataclass(frozen=True, slots=True)
class ControlBuckets:
    """The opened buckets of the control plane, ready to use."""

    lease: KeyValue
    members: KeyValue
    orders: KeyValue
    names: BucketNames
    ttl_s: float


def _wanted(bucket: str, *, ttl_s: float | None, history: int, replicas: int) -> dict[str, object]:
    from nats.js.api import DiscardPolicy, StorageType

    return {
        "subjects": [f"$KV.{bucket}.>"],
        # no TTL reads back as 0 (nanoseconds), which the client turns into 0.0 seconds
        "max_age": float(ttl_s) if ttl_s else 0.0,
        "max_msgs_per_subject": history,
        "num_replicas": replicas,
        "storage": StorageType.FILE,
        "discard": DiscardPolicy.NEW,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
    }


async def ensure_bucket(
    js: JetStreamContext, bucket: str, *, ttl_s: float | None, history: int, replicas: int
) -> KeyValue:
    """Create ``bucket`` (or open it when it exists with the same config) and read its config
    back; :class:`ClusterConfigError` when the server holds another one, naming the fields."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import APIError

    config = KeyValueConfig(
        bucket=bucket, history=history, ttl=ttl_s, replicas=replicas, storage=StorageType.FILE
    )
    wanted = _wanted(bucket, ttl_s=ttl_s, history=history, replicas=replicas)
    stream = kv_stream(bucket)
    try:
        kv = await js.create_key_value(config)
    except APIError as exc:
        if exc.err_code != _STREAM_IN_USE:
            raise ClusterError(f"cannot create KV bucket {bucket!r}: {exc}") from exc
        # It exists with another config: say which fields differ instead of a bare 10058.
        info = await js.stream_info(stream)
        existing = {key: getattr(info.config, key, None) for key in wanted}
        check_readback("KV bucket (existing)", bucket, wanted, existing)
        raise ClusterConfigError(
            f"KV bucket {bucket!r} exists with a config the server will not change to the one "
            f"asked for: {exc.description}"
        ) from exc
    info = await js.stream_info(stream)
    returned = {key: getattr(info.config, key, None) for key in wanted}
    check_readback("KV bucket", bucket, wanted, returned)
    return kv


async def ensure_control_buckets(
    js: JetStreamContext, *, stream: str, lease_ttl_s: float, replicas: int
) -> ControlBuckets:
    """The lease, membership and order-registry buckets of the cluster on ``stream``."""
    names = bucket_names(stream)
    lease = await ensure_bucket(js, names.lease, ttl_s=lease_ttl_s, history=1, replicas=replicas)
    members = await ensure_bucket(
        js, names.members, ttl_s=lease_ttl_s, history=1, replicas=replicas
    )
    orders = await ensure_bucket(js, names.orders, ttl_s=None, history=1, replicas=replicas)
    return ControlBuckets(
        lease=lease, members=members, orders=orders, names=names, ttl_s=lease_ttl_s
    )
