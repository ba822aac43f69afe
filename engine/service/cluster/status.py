"""``tickflow cluster status``: nodes, partition owners, lag and checkpoint age, read from NATS.

Read-only: it opens the buckets, the stream and the durables that exist and creates nothing,
so it is safe against a running cluster and says what is missing instead (a cluster whose
data plane never started has no stream yet). Everything comes from the server, so any host
that reaches NATS can ask, with or without a node running there.

- **nodes**: the membership bucket's live keys, with the age of each node's last heartbeat
  (its wall clock against ours: skew between hosts shows up here);
- **partitions**: each lease's holder, its token (the acquiring revision) and current
  revision, how long it has been held;
- **lag**: the stream's last sequence on the partition's subjects minus its durable's ack
  floor (a sequence distance: the stream interleaves all partitions, so it bounds the count of
  unacked messages from above; ``unacked`` is the exact count the server reports);
- **checkpoint age**: from the ``ts`` field of the partition's checkpoint (data plane's
  bucket ``<stream>_ckpt``, key ``p<p>``) when that bucket exists.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .buckets import bucket_names
from .errors import ClusterError
from .lease import decode_record, lease_key
from .membership import list_members
from .partition import partition_filter

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from engine.config.schema import ClusterSettings

__all__ = [
    "ClusterStatus",
    "NodeStatus",
    "PartitionStatus",
    "add_parser",
    "cmd_cluster",
    "durable_name",
    "format_status",
    "gather_status",
]


def durable_name(stream: str, partition: int) -> str:
    """The data plane's durable for ``partition`` (the naming contract: ``<stream>_p<p>``)."""
    return f"{stream}_p{partition}"


class NodeStatus(msgspec.Struct, kw_only=True):
    node: str
    instance: str
    heartbeat_age_s: float
    up_s: float


class PartitionStatus(msgspec.Struct, kw_only=True):
    partition: int
    owner: str | None = None
    instance: str | None = None
    token: int | None = None
    revision: int | None = None
    held_s: float | None = None
    last_seq: int | None = None
    ack_floor: int | None = None
    lag: int | None = None
    unacked: int | None = None
    checkpoint_age_s: float | None = None


class ClusterStatus(msgspec.Struct, kw_only=True):
    nats_url: str
    stream: str
    partitions: int
    nodes: list[NodeStatus]
    owners: list[PartitionStatus]
    stream_exists: bool
    notes: list[str]


async def _bucket(js: JetStreamContext, name: str) -> Any:
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        return None


async def gather_status(
    js: JetStreamContext, settings: ClusterSettings, *, wall: Callable[[], float] = time.time
) -> ClusterStatus:
    """The cluster as NATS sees it now (reads only)."""
    from nats.js.errors import NotFoundError

    names = bucket_names(settings.stream)
    now = wall()
    notes: list[str] = []
    nodes: list[NodeStatus] = []
    members_kv = await _bucket(js, names.members)
    if members_kv is None:
        notes.append(f"no membership bucket {names.members!r}: no node has joined yet")
    else:
        for name, view in sorted((await list_members(members_kv)).items()):
            nodes.append(NodeStatus(
                node=name, instance=view.record.instance,
                heartbeat_age_s=max(0.0, now - view.record.beat),
                up_s=max(0.0, now - view.record.started),
            ))
    owners = [PartitionStatus(partition=p) for p in range(settings.partitions)]
    lease_kv = await _bucket(js, names.lease)
    if lease_kv is None:
        notes.append(f"no lease bucket {names.lease!r}: no partition has an owner")
    else:
        await asyncio.gather(*(_lease(lease_kv, row, now) for row in owners))
        unowned = [row.partition for row in owners if row.owner is None]
        if unowned:
            notes.append(f"{len(unowned)} partition(s) without an owner: "
                         f"{_ranges(unowned)}")
    try:
        await js.stream_info(settings.stream)
        stream_exists = True
    except NotFoundError:
        stream_exists = False
        notes.append(f"stream {settings.stream!r} does not exist yet (no node has started "
                     "the data plane): no lag to show")
    if stream_exists:
        await asyncio.gather(*(_lag(js, settings, row) for row in owners))
        missing = [row.partition for row in owners if row.ack_floor is None]
        if missing:
            notes.append(f"no durable consumer yet for {len(missing)} partition(s): "
                         f"{_ranges(missing)} (named {settings.stream}_p<p>)")
    ckpt_kv = await _bucket(js, names.checkpoints)
    if ckpt_kv is None:
        notes.append(f"no checkpoint bucket {names.checkpoints!r} yet: no checkpoint ages")
    else:
        await asyncio.gather(*(_checkpoint(ckpt_kv, row, now, notes) for row in owners))
    return ClusterStatus(
        nats_url=settings.nats_url, stream=settings.stream, partitions=settings.partitions,
        nodes=nodes, owners=owners, stream_exists=stream_exists, notes=notes,
    )


async def _lease(kv: Any, row: PartitionStatus, now: float) -> None:
    from nats.js.errors import KeyNotFoundError

    try:
        entry = await kv.get(lease_key(row.partition))
    except KeyNotFoundError:
        return
    record = decode_record(entry.value or b"")
    row.owner, row.instance = record.node, record.instance
    row.revision = entry.revision
    row.token = record.token or entry.revision
    row.held_s = max(0.0, now - record.acquired)


async def _lag(js: JetStreamContext, settings: ClusterSettings, row: PartitionStatus) -> None:
    from nats.js.errors import NotFoundError

    try:
        last = await js.get_last_msg(settings.stream, partition_filter(settings.prefix,
                                                                       row.partition))
        row.last_seq = last.seq or 0
    except NotFoundError:
        row.last_seq = 0  # nothing published to this partition yet
    try:
        info = await js.consumer_info(settings.stream, durable_name(settings.stream,
                                                                    row.partition))
    except NotFoundError:
        return
    row.ack_floor = info.ack_floor.stream_seq if info.ack_floor else 0
    row.lag = max(0, row.last_seq - row.ack_floor)
    row.unacked = (info.num_pending or 0) + (info.num_ack_pending or 0)


class _Checkpoint(msgspec.Struct):
    ts: float


async def _checkpoint(kv: Any, row: PartitionStatus, now: float, notes: list[str]) -> None:
    from nats.js.errors import KeyNotFoundError

    try:
        entry = await kv.get(f"p{row.partition}")
    except KeyNotFoundError:
        return
    if not entry.value:  # claimed by an owner, no checkpoint written yet
        return
    try:
        row.checkpoint_age_s = max(0.0, now - msgspec.json.decode(entry.value or b"",
                                                                   type=_Checkpoint).ts)
    except msgspec.DecodeError:
        notes.append(f"partition {row.partition}: checkpoint has no numeric 'ts' field")


def _ranges(values: list[int]) -> str:
    """``0-3, 7, 9-10``."""
    parts: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def format_status(status: ClusterStatus) -> str:
    """The text report: a nodes table, a partitions table, then the notes."""
    owned: dict[str, int] = {}
    for row in status.owners:
        if row.owner is not None:
            owned[row.owner] = owned.get(row.owner, 0) + 1
    lines = [
        f"cluster {status.stream} at {status.nats_url}: {status.partitions} partitions, "
        f"{len(status.nodes)} live node(s)",
        "",
        f"{'NODE':<24} {'INSTANCE':<14} {'HEARTBEAT':>10} {'UP':>9} {'PARTITIONS':>10}",
    ]
    for node in status.nodes:
        lines.append(f"{node.node:<24} {node.instance:<14} {_age(node.heartbeat_age_s):>10} "
                     f"{_age(node.up_s):>9} {owned.get(node.node, 0):>10}")
    if not status.nodes:
        lines.append("(no live node)")
    lines += [
        "",
        f"{'P':>4} {'OWNER':<24} {'TOKEN':>7} {'REV':>7} {'HELD':>8} {'LAST SEQ':>9} "
        f"{'ACK FLOOR':>9} {'LAG':>7} {'UNACKED':>7} {'CHECKPOINT':>10}",
    ]
    for row in status.owners:
        lines.append(
            f"{row.partition:>4} {_cell(row.owner):<24} {_cell(row.token):>7} "
            f"{_cell(row.revision):>7} {_age(row.held_s):>8} {_cell(row.last_seq):>9} "
            f"{_cell(row.ack_floor):>9} {_cell(row.lag):>7} {_cell(row.unacked):>7} "
            f"{_age(row.checkpoint_age_s):>10}"
        )
    if status.notes:
        lines.append("")
        lines += [f"note: {note}" for note in status.notes]
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------

def add_parser(sub: Any, default_config: Path) -> None:
    """``tickflow cluster status``; the CLI calls this and :func:`cmd_cluster`."""
    cluster = sub.add_parser("cluster", help="cluster mode over NATS JetStream (docs/cluster.md)")
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    status = actions.add_parser(
        "status", help="nodes, partition owners, lag and checkpoint age, read from NATS"
    )
    status.add_argument("--config", type=Path, default=default_config,
                        help="TOML config file (its [cluster] table says where NATS is)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for NATS (connect and each request; default 5)")


def cmd_cluster(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.core.errors import ConfigError

    if getattr(args, "cluster_command", None) != "status":
        print("tickflow cluster: say which action (status)", file=sys.stderr)
        return 2
    if not (args.timeout > 0 and args.timeout < 3600):
        print("tickflow cluster status: --timeout must be in (0, 3600) seconds",
              file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    if not config.cluster.enabled:
        print(f"tickflow cluster status: [cluster] enabled is false in {args.config}: "
              "cluster mode is off, there is no cluster to show", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(_fetch(config.cluster, args.timeout))
    except ClusterError as exc:  # NATS unreachable or refusing: one line, no traceback
        print(f"tickflow cluster status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(msgspec.json.encode(status).decode() + "\n")
    else:
        print(format_status(status))
    return 0


async def _fetch(settings: ClusterSettings, wait_s: float) -> ClusterStatus:
    import nats

    errors: list[Exception] = []

    async def remember(exc: Exception) -> None:
        errors.append(exc)  # reported once below, with the reason the connect gave up

    try:
        # max_reconnect_attempts 0 would mean "forever" to nats-py: 1 is one retry, bounded
        nc = await asyncio.wait_for(nats.connect(
            settings.nats_url, connect_timeout=wait_s, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.1, error_cb=remember,
        ), wait_s * 3)
    except (Exception, TimeoutError) as exc:
        cause = errors[-1] if errors else exc
        raise ClusterError(f"cannot reach NATS at {settings.nats_url}: "
                           f"{type(cause).__name__}: {cause}") from exc
    try:
        return await asyncio.wait_for(gather_status(nc.jetstream(timeout=wait_s), settings),
                                      wait_s * 4)
    except TimeoutError as exc:
        raise ClusterError(f"NATS at {settings.nats_url} did not answer in time "
                           f"(is JetStream enabled?): {exc}") from exc
    except nats.errors.Error as exc:
        raise ClusterError(f"NATS at {settings.nats_url} refused a status request "
                           f"(is JetStream enabled?): {type(exc).__name__}: {exc}") from exc
    finally:
        await nc.close()

