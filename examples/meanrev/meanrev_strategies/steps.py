"""Mean reversion around an exponentially weighted fair value, as a diamond of four steps::

    snapshot ──► fair_value (async) ──┐
        └──────► volatility (thread) ─┴─► decide (sends the order)

* ``snapshot`` (inline, ``@cheap``) copies the symbol's recent prices;
* ``fair_value`` (async) computes an exponentially weighted mean, handing the loop back every
  ``chunk`` prices so a long window never holds up more urgent work (it stays preemptible);
* ``volatility`` (a plain function: runs in a thread) measures the per-tick standard deviation
  of returns and, with the step's own seeded ``ctx.rng``, a bootstrap estimate of its spread,
  which widens the entry band when the estimate is shaky;
* ``decide`` (``@cheap @sends_orders``) sells when the price is ``entry_z`` deviations above fair
  value, buys when it is as far below, and flattens the position once it is back within
  ``exit_z``. The order goes out through ``ctx.submit_order``: risk checks and idempotency apply.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Annotated, TypeVar

import msgspec

from engine.core.strategy import (
    Context,
    OrderResult,
    StrategyError,
    cheap,
    sends_orders,
    strategy_params,
)

S = TypeVar("S", bound=msgspec.Struct)
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Positive = Annotated[float, msgspec.Meta(gt=0.0)]


class SnapshotParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    window: Annotated[int, msgspec.Meta(ge=3, le=512)] = 120


class FairValueParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    halflife: Positive = 20.0
    """Ticks after which a price's weight has halved."""
    chunk: PositiveInt = 32
    """Prices weighed between two hand-backs to the event loop."""


class VolatilityParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bootstrap: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 20
    """Resamples for the spread of the estimate (0: none)."""


class DecideParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    entry_z: Positive = 2.0
    exit_z: Annotated[float, msgspec.Meta(ge=0.0)] = 0.5
    qty: Positive = 5.0
    min_ticks: Annotated[int, msgspec.Meta(ge=3)] = 30

    def __post_init__(self) -> None:
        if self.exit_z >= self.entry_z:
            raise ValueError(f"exit_z ({self.exit_z}) must be below entry_z ({self.entry_z})")


class Prices(msgspec.Struct, frozen=True):
    symbol: str
    prices: tuple[float, ...]


class FairValue(msgspec.Struct, frozen=True):
    value: float
    samples: int


class Volatility(msgspec.Struct, frozen=True):
    sigma: float
    """Standard deviation of one tick's relative return."""
    spread: float
    """Bootstrap standard deviation of ``sigma`` (0 without resamples)."""


def _input(ctx: Context[object], name: str, kind: type[S]) -> S:
    value = ctx.inputs.get(name)
    if isinstance(value, kind):
        return value
    if isinstance(value, dict):  # restored from storage after a restart: plain data
        return msgspec.convert(value, kind)
    raise StrategyError(f"step {ctx.step!r} needs the output of {name!r}, got {value!r}")


@cheap
@strategy_params(SnapshotParams)
def snapshot(ctx: Context[SnapshotParams]) -> Prices:
    ticks = ctx.market.window(ctx.symbol, ctx.params.window) or (ctx.tick,)
    return Prices(ctx.symbol, tuple(t.price for t in ticks))


@strategy_params(FairValueParams)
async def fair_value(ctx: Context[FairValueParams]) -> FairValue:
    data = _input(ctx, "snapshot", Prices)
    alpha = 1.0 - 0.5 ** (1.0 / ctx.params.halflife)
    value = data.prices[0]
    for i, price in enumerate(data.prices[1:], 1):
        value += alpha * (price - value)
        if i % ctx.params.chunk == 0:
            await asyncio.sleep(0)  # yield to the loop: a preemption or timeout can land here
    return FairValue(value, len(data.prices))


@strategy_params(VolatilityParams)
def volatility(ctx: Context[VolatilityParams]) -> Volatility:
    data = _input(ctx, "snapshot", Prices)
    p = data.prices
    returns = [(b - a) / a for a, b in itertools.pairwise(p) if a > 0.0]
    if len(returns) < 2:
        return Volatility(0.0, 0.0)
    sigma = _stdev(returns)
    draws = []
    for _ in range(ctx.params.bootstrap):
        sample = [ctx.rng.choice(returns) for _ in returns]
        draws.append(_stdev(sample))
    return Volatility(sigma, _stdev(draws) if len(draws) > 1 else 0.0)


def _stdev(xs: list[float]) -> float:
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@cheap
@sends_orders
@strategy_params(DecideParams)
def decide(ctx: Context[DecideParams]) -> OrderResult:
    p = ctx.params
    fair = _input(ctx, "fair_value", FairValue)
    vol = _input(ctx, "volatility", Volatility)
    price = ctx.tick.price
    held = ctx.broker.position(ctx.symbol).qty
    deviation = (vol.sigma + vol.spread) * fair.value
    if fair.samples < p.min_ticks or deviation <= 0.0:
        return OrderResult("skipped", ctx.symbol, ctx.client_order_id, reason="warming_up")
    z = (price - fair.value) / deviation
    if held != 0.0 and abs(z) <= p.exit_z:
        return ctx.submit_order("SELL" if held > 0.0 else "BUY", abs(held))
    if z >= p.entry_z and held >= 0.0:
        return ctx.submit_order("SELL", p.qty)
    if z <= -p.entry_z and held <= 0.0:
        return ctx.submit_order("BUY", p.qty)
    return OrderResult("skipped", ctx.symbol, ctx.client_order_id, reason="inside_band")
