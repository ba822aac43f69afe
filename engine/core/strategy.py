"""The strategy API: the one module strategy code imports from tickflow.

An action is a plain function of a step context, ``def action(ctx) -> object`` or
``async def action(ctx) -> object``; its return value becomes the step's output, handed to the
steps that depend on it through ``ctx.inputs``. Where it runs:

* ``@cheap`` plain functions run inline on the event loop: they must be quick (an inline step
  cannot be preempted or timed out mid-way);
* ``async def`` actions run as tasks on the loop (cancellable: preemption and timeouts interrupt
  them at an ``await``);
* other plain functions run in a thread of the engine's pool (never interrupted).

Annotate the context as ``Context[MyParams]``: ``ctx.params`` is then the typed params struct
the action declared with :func:`strategy_params` (decoded and validated when the config is
loaded, so ``tickflow validate`` reports a bad value with its key path). Orders go out only
through ``ctx.submit_order(side, qty)`` from an action marked ``@sends_orders``: risk checks and
client-order-id idempotency always apply (see :mod:`engine.core.orders`).

This module only gathers and types what strategies need; the engine's layering contract
(``pyproject.toml``, import-linter) lets ``strategies`` import nothing else of ``engine``.
docs/strategies.md is the guide.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import msgspec

from engine.core.errors import BrokerError, DuplicateOrderError, StrategyError, TickflowError
from engine.core.events import Tick
from engine.core.orders import (
    Books,
    Broker,
    BrokerBooks,
    BrokerStatistics,
    Fill,
    OrderResult,
    OrderStatus,
    Position,
    Risk,
    RiskDecision,
    RiskReason,
    Side,
)
from engine.core.runs import StepContext
from engine.core.symbols import MarketData

__all__ = [
    "CHEAP_ATTR",
    "PARAMS_ATTR",
    "SENDS_ORDERS_ATTR",
    "Books",
    "Broker",
    "BrokerBooks",
    "BrokerError",
    "BrokerStatistics",
    "Clock",
    "Context",
    "DuplicateOrderError",
    "Fill",
    "MarketData",
    "OrderResult",
    "OrderStatus",
    "Position",
    "Risk",
    "RiskDecision",
    "RiskReason",
    "Side",
    "StepContext",
    "StrategyError",
    "Tick",
    "TickflowError",
    "cheap",
    "is_cheap",
    "params_type",
    "sends_orders",
    "sends_orders_flag",
    "strategy_params",
]

CHEAP_ATTR = "__tickflow_cheap__"
SENDS_ORDERS_ATTR = "__tickflow_sends_orders__"
PARAMS_ATTR = "__tickflow_params__"

F = TypeVar("F", bound=Callable[..., Any])
P_co = TypeVar("P_co", covariant=True)
S = TypeVar("S", bound=msgspec.Struct)

Clock = Callable[[], float]
"""The engine's clock in epoch seconds: wall time live, virtual time in a backtest."""


class Context(Protocol[P_co]):
    """The step context as an action sees it; ``P_co`` is the type of its ``params``.

    The engine passes a :class:`StepContext`; this protocol only gives it precise types.
    """

    @property
    def run_id(self) -> int: ...
    @property
    def workflow(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def symbol(self) -> str:
        """The symbol this run is for."""
        ...
    @property
    def tick(self) -> Tick:
        """The (conflated: latest) tick that triggered the run."""
        ...
    @property
    def inputs(self) -> Mapping[str, Any]:
        """The outputs of this step's dependencies (of every completed step of the run) by
        step name."""
        ...
    @property
    def attempt(self) -> int:
        """1 on the first attempt, 2 on the first retry, ... (a preemption is not an attempt)."""
        ...
    @property
    def params(self) -> P_co:
        """The step's params: the action's :func:`strategy_params` struct, or a read-only
        mapping of the TOML table when it declared none."""
        ...
    @property
    def market(self) -> MarketData:
        """Recent ticks of every symbol (``latest(symbol)``, ``window(symbol, n)``)."""
        ...
    @property
    def broker(self) -> Books:
        """The books, read-only (positions, statistics): orders go through submit_order."""
        ...
    @property
    def risk(self) -> Risk: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def rng(self) -> random.Random:
        """The step's own generator, seeded from ``engine.seed``, the workflow, the step and
        the run id: deterministic, and independent of the engine's own draws."""
        ...
    @property
    def sends_orders(self) -> bool: ...
    @property
    def client_order_id(self) -> str:
        """``workflow:run_id:step``: the same on every attempt of this step."""
        ...

    def submit_order(self, side: Side | str, qty: float | None = None) -> OrderResult:
        """Send one market order for ``symbol`` (``qty`` defaults to the broker's
        ``default_qty``) through the risk checks; a retry gets its first fill back."""
        ...


def cheap(fn: F) -> F:
    """Mark a plain function as cheap enough to run inline on the event loop."""
    setattr(fn, CHEAP_ATTR, True)
    return fn


def is_cheap(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, CHEAP_ATTR, False))


def sends_orders(fn: F) -> F:
    """Mark an action that sends orders: only such an action may call ``ctx.submit_order``,
    and config load refuses ``preemptible = true`` for it (an order once sent must never be
    cancelled half-way)."""
    setattr(fn, SENDS_ORDERS_ATTR, True)
    return fn


def sends_orders_flag(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, SENDS_ORDERS_ATTR, False))


def strategy_params(params: type[S]) -> Callable[[F], F]:
    """Declare the params of an action as a ``msgspec.Struct``.

    The struct should be ``frozen=True, forbid_unknown_fields=True`` with defaults for every
    field and constraints as ``Annotated[float, msgspec.Meta(gt=0)]``; checks across fields go
    in ``__post_init__`` (raise ``ValueError``). The loader decodes the step's ``params`` table
    into it when the config is loaded: a wrong value, a misspelt name or a failing
    ``__post_init__`` is a config error with its key path, and the action receives the
    struct as ``ctx.params``.
    """
    if not (isinstance(params, type) and issubclass(params, msgspec.Struct)):
        raise StrategyError(f"strategy_params needs a msgspec.Struct class, got {params!r}")

    def mark(fn: F) -> F:
        setattr(fn, PARAMS_ATTR, params)
        return fn

    return mark


def params_type(fn: Callable[..., Any]) -> type[msgspec.Struct] | None:
    """The params struct an action declared with :func:`strategy_params`, if any."""
    declared = getattr(fn, PARAMS_ATTR, None)
    if isinstance(declared, type) and issubclass(declared, msgspec.Struct):
        return declared
    return None
