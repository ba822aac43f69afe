"""Typed configuration objects: what a TOML config file decodes into.

Every struct is frozen, keyword-only and rejects unknown keys, so a typo in a config file is a
load error rather than a silently ignored setting. The options are spelled out on each class
rather than inherited from a base, so type checkers see them too. Range and shape constraints
live in the type aliases below (checked by msgspec while decoding); rules that span several
fields or need imports (dependency graphs, action resolution, cross-field bounds) live in
:mod:`engine.config.loader`.

Containers inside the structs (``Config.workflows``, ``Step.params``) are plain dicts: freezing a
struct stops attribute assignment, not mutation of what the attributes hold. Treat them as
read-only.
"""

from __future__ import annotations

import graphlib
import heapq
import random
from typing import Annotated, Any, Literal

import msgspec

from engine.core.events import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN

__all__ = [
    "ACTION_PATTERN",
    "NAME_PATTERN",
    "AdminSettings",
    "BrokerSettings",
    "Config",
    "EngineSettings",
    "IntakeSettings",
    "MetricsSettings",
    "ReplaySettings",
    "Retry",
    "RiskSettings",
    "Route",
    "SimSettings",
    "SourceSettings",
    "Step",
    "StorageSettings",
    "SymbolSeed",
    "Workflow",
    "topological_order",
]

# Step and workflow names end up in metric labels, storage rows and client order ids
# (``workflow:run_id:step``), so they are kept to identifier-like tokens without separators.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# ``package.module:function``; a dotted attribute (``module:Class.method``) is accepted too.
ACTION_PATTERN = rf"^{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*$"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
StepName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
ActionSpec = Annotated[str, msgspec.Meta(pattern=ACTION_PATTERN)]
SymbolName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=SYMBOL_MAX_LENGTH, pattern=SYMBOL_PATTERN)
]


class EngineSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Daemon-wide knobs: agent pool, heap, sweep and intake limits."""

    agents: PositiveInt = 5
    heap_capacity: PositiveInt = 65536
    seed: int = 0
    default_symbol_priority: NonNegativeInt = 2
    sweep_interval_s: PositiveFloat = 5.0
    market_depth: PositiveInt = 512
    thread_workers: PositiveInt = 4
    # Below 256 bytes not even a minimal DATA_READY with a realistic symbol fits.
    max_line_bytes: Annotated[int, msgspec.Meta(ge=256)] = 65536
    drain_timeout_s: NonNegativeFloat = 5.0
    # Symbols are registered on their first event; past this many, an event for a new symbol
    # is refused (reason "symbol_limit", counted) -- a client sending made-up names must not
    # grow the table, and the state file, without bound. Seeded symbols count, but are always
    # registered.
    max_symbols: PositiveInt = 100_000
    # The garbage collector while the engine runs (engine/service/gcpolicy.py says why): young
    # collections every this many allocations (0: Python's own thresholds), and startup objects
    # frozen out of full collections.
    gc_gen0_threshold: NonNegativeInt = 20_000
    gc_freeze: bool = True


class SimSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The built-in random-walk market simulator."""

    symbols: PositiveInt = 20
    hot_symbols: NonNegativeInt = 4
    tick_rate_hz: NonNegativeFloat = 200.0
    seed: int = 1
    start_price: PositiveFloat = 100.0
    volatility: NonNegativeFloat = 0.001
    spread_bps: NonNegativeFloat = 2.0
    cold_priority: PositiveInt = 2


class ReplaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Replay of a recorded tick file. ``path`` is absolute once loaded by the loader."""

    path: Annotated[str, msgspec.Meta(min_length=1)]
    speed: NonNegativeFloat = 1.0
    format: Literal["auto", "csv", "jsonl"] = "auto"


class SourceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: Literal["sim", "replay", "none"] = "sim"
    sim: SimSettings = SimSettings()
    replay: ReplaySettings | None = None


class BrokerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    initial_cash: PositiveFloat = 1_000_000.0
    slippage_bps: NonNegativeFloat = 1.0
    fee_bps: NonNegativeFloat = 0.5
    order_qty: PositiveFloat = 10.0


class RiskSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_position: PositiveFloat = 1000.0
    max_notional: PositiveFloat = 250_000.0
    max_orders_per_sec: PositiveFloat = 20.0


class SymbolSeed(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: SymbolName
    priority: NonNegativeInt


class Retry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Retry policy of a step. ``count`` is the number of retries after the first attempt."""

    count: NonNegativeInt = 0
    backoff_base_ms: NonNegativeFloat = 10.0
    backoff_factor: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    backoff_max_ms: NonNegativeFloat = 1000.0
    jitter: Fraction = 0.1

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry).

        The nominal delay is ``backoff_base_ms * backoff_factor ** (attempt - 1)``, capped at
        ``backoff_max_ms``; the result is drawn uniformly from ``nominal * (1 ± jitter)`` and
        never exceeds ``backoff_max_ms``. Clipping the range (rather than clamping the draw)
        keeps retries that reached the cap spread out instead of piling up on exactly the
        cap. Exactly one value is drawn from ``rng`` per call, so a seeded run stays
        reproducible whatever the jitter setting.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1 (1 = first retry), got {attempt}")
        try:
            nominal = self.backoff_base_ms * self.backoff_factor ** (attempt - 1)
        except OverflowError:
            nominal = self.backoff_max_ms
        nominal = min(nominal, self.backoff_max_ms)
        low = nominal * (1.0 - self.jitter)
        high = min(nominal * (1.0 + self.jitter), self.backoff_max_ms)
        return rng.uniform(low, high) / 1000.0


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The symbol priorities (inclusive bounds) whose ``DATA_READY`` triggers a workflow."""

    min_priority: NonNegativeInt = 0
    max_priority: NonNegativeInt | None = None

    def matches(self, priority: int) -> bool:
        if priority < self.min_priority:
            return False
        return self.max_priority is None or priority <= self.max_priority


class Step(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One node of a workflow's DAG.

    ``run_in`` picks where a plain (non-async) action runs: ``"inline"`` on the event loop,
    ``"thread"`` in the engine's thread pool, ``"auto"`` inline when the action is marked
    :func:`engine.core.strategy.cheap` and in a thread otherwise. Async actions always run as tasks
    on the loop.

    Thread steps must be ``preemptible = false``: a Python thread cannot be interrupted, so a
    "preempted" thread step would keep running and holding its resources. A *timeout* on a
    thread step is allowed: the step is failed (and retried per ``retry``) at its deadline, and
    the late result of the still-running thread is discarded when it finally arrives.
    """

    name: StepName
    action: ActionSpec
    depends_on: tuple[str, ...] = ()
    timeout_ms: PositiveFloat = 1000.0
    retry: Retry = Retry()
    preemptible: bool = True
    run_in: Literal["auto", "inline", "thread"] = "auto"
    params: dict[str, Any] = {}


class Workflow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A DAG of steps run per (workflow, symbol) when a routed symbol becomes ``DATA_READY``.

    ``on_busy`` says what a trigger does while a run of this workflow for that symbol is in
    progress: queue at most one follow-up run, or skip the trigger. ``deadline_ms`` is relative
    to the trigger and orders the ready heap within a priority level.
    """

    priority: NonNegativeInt
    route: Route = Route()
    trigger: Literal["DATA_READY"] = "DATA_READY"
    # Bounded: the compiled lanes keep it in a C int.
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    on_busy: Literal["follow_up", "skip"] = "follow_up"
    deadline_ms: PositiveFloat = 1000.0
    enabled: bool = True
    steps: Annotated[tuple[Step, ...], msgspec.Meta(min_length=1)]

    def topological_order(self) -> tuple[str, ...]:
        """Step names, dependencies first; see :func:`topological_order`."""
        return topological_order(self)

    def step(self, name: str) -> Step:
        """The step called ``name``; ``KeyError`` if there is none."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


class MetricsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The HTTP endpoint serving ``/metrics``, ``/healthz`` and ``/readyz``.

    ``port = 0`` binds a free port (tests); the bound port is logged as ``metrics listening``.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9108


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The SQLite state database (see docs/storage.md for the durability contract).

    ``path`` empty means ``$STATE_DIRECTORY/tickflow.db`` under systemd, else
    ``./state/tickflow.db``. ``synchronous = "normal"`` (WAL) survives a process crash at every
    commit; ``"full"`` also survives a power loss, at a cost per commit.
    """

    enabled: bool = True
    path: str = ""
    synchronous: Literal["normal", "full", "extra"] = "normal"
    commit_interval_ms: PositiveFloat = 2.0
    commit_gather_max_ms: PositiveFloat = 20.0
    batch_max: PositiveInt = 5000
    backlog_max: PositiveInt = 50_000
    retention_hours: PositiveFloat = 24.0
    prune_interval_s: PositiveFloat = 60.0
    busy_timeout_ms: PositiveInt = 5000


class IntakeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Network intake: JSON-lines events over TCP and/or a Unix socket
    (engine/service/netintake.py).

    Both listeners are off by default. ``tcp_port = 0`` binds a free port (tests; logged as
    ``intake listening``). The shared-secret token is read from ``token_file`` or the
    ``TICKFLOW_INTAKE_TOKEN`` environment variable -- never from this file, so a config can be
    shared or committed without leaking it.
    """

    tcp_host: str = "127.0.0.1"
    tcp_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    unix_path: str = ""
    token_file: str = ""
    max_connections: PositiveInt = 64
    # Finite and bounded: an infinite idle timeout would let stalled clients hold every slot.
    # Idle means no complete line (a byte now and then does not count), or acks left unread.
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 256
    write_high_water: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 1 << 20

    @property
    def enabled(self) -> bool:
        return self.tcp_port is not None or bool(self.unix_path)


class AdminSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The admin HTTP API on the metrics address (docs/deploy.md).

    ``token_file`` holds the bearer token that changing endpoints require (``$VAR`` references
    are expanded, e.g. ``${CREDENTIALS_DIRECTORY}/admin-token`` under systemd); empty means
    the ``TICKFLOW_ADMIN_TOKEN`` environment variable, and with neither the changing endpoints
    are disabled. The token itself never goes in the config file or on the command line.
    """

    token_file: str = ""


class StrategiesSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where the user's strategy modules live (docs/strategies.md).

    ``paths``: folders put at the front of the import path before actions resolve, the first
    listed searched first; relative ones are relative to the config file's folder (for a config
    given as a string, the working directory). The loader stores them absolute. Unset: the
    config's own folder, so ``mystrats.py`` beside the config is found as ``mystrats`` -- unless
    that folder is itself a Python package (it holds ``__init__.py``: the config is a package's
    data file, like the default config inside ``engine/``), which must not become an import root.
    """

    paths: tuple[str, ...] | None = None


class ClusterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Cluster mode over NATS JetStream (docs/cluster.md); off by default.

    Symbols are split into ``partitions`` by ``fnv1a32(symbol) % partitions``: the number is
    fixed for the life of a stream, since changing it moves most symbols. ``node`` empty means
    ``<hostname>:<pid>``. A node owns a partition while it holds that partition's lease, renewed
    every ``lease_ttl_s / 3``; ``replicas`` is the JetStream replica count of the stream and the
    buckets (1 on a single server, 3 on a three-server NATS cluster).
    """

    enabled: bool = False
    nats_url: str = "nats://127.0.0.1:4222"
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "tickflow"
    stream: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "TICKFLOW"
    partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    node: str = ""
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=0.5, le=3600)] = 5.0
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    checkpoint_interval_ms: PositiveFloat = 50.0
    max_ack_pending: PositiveInt = 20_000


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration of one daemon."""

    engine: EngineSettings = EngineSettings()
    source: SourceSettings = SourceSettings()
    broker: BrokerSettings = BrokerSettings()
    risk: RiskSettings = RiskSettings()
    metrics: MetricsSettings = MetricsSettings()
    storage: StorageSettings = StorageSettings()
    intake: IntakeSettings = IntakeSettings()
    admin: AdminSettings = AdminSettings()
    strategies: StrategiesSettings = StrategiesSettings()
    cluster: ClusterSettings = ClusterSettings()
    symbols: tuple[SymbolSeed, ...] = ()
    workflows: Annotated[dict[str, Workflow], msgspec.Meta(min_length=1)]


def topological_order(workflow: Workflow) -> tuple[str, ...]:
    """Step names of ``workflow`` with every step after all of its dependencies.

    Ties keep declaration order, so the order is deterministic and matches what the file says
    when the file already lists steps in dependency order. Unknown dependency names are
    ignored and a cycle (a self-dependency included) raises ``ValueError``; a loaded config
    has neither (the loader rejects both). The result is recomputed on every call: callers on
    a hot path compute it once per config.
    """
    position = {step.name: i for i, step in enumerate(workflow.steps)}
    sorter = graphlib.TopologicalSorter(
        {step.name: [d for d in step.depends_on if d in position] for step in workflow.steps}
    )
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise ValueError(f"dependency cycle among steps: {', '.join(exc.args[1])}") from None
    # graphlib hands out every ready step at once; taking the earliest-declared one each time
    # is what keeps ties in declaration order.
    ready: list[tuple[int, str]] = []
    order: list[str] = []
    while sorter.is_active():
        for name in sorter.get_ready():
            heapq.heappush(ready, (position[name], name))
        _, name = heapq.heappop(ready)
        order.append(name)
        sorter.done(name)
    return tuple(order)
