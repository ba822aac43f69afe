"""Plumbing shared by the strategy steps: the action vocabulary, the Params base, input lookup.

Every step declares its tunables as a frozen ``msgspec.Struct`` (see :class:`Params`) with
``@strategy_params``; the loader validates the step's ``params`` table into it when the config
is loaded, so a bad value is a ``tickflow validate`` error with its key path instead of a
surprise on some later attempt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import msgspec

from engine.core.strategy import Context, StrategyError

__all__ = [
    "Action",
    "Params",
    "StrategyError",
    "clamp",
    "find_input",
]

Action = Literal["BUY", "SELL", "HOLD"]

T = TypeVar("T")


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the shipped strategies' params: immutable, and a misspelt key is an error."""


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``; NaN maps to ``low`` so it can never leak downstream."""
    if math.isnan(value):
        return low
    return max(low, min(high, value))


def find_input(ctx: Context[Any], name: str, kind: type[T]) -> T:
    """The output of dependency ``name`` as a ``kind``.

    Users may rename steps in their workflows, so when ``name`` is absent the single input of the
    right type is used. A plain mapping is converted: outputs restored from storage after a restart
    may come back as decoded JSON rather than the struct the producing step returned.
    """
    value: object
    if name in ctx.inputs:
        value = ctx.inputs[name]
    else:
        candidates = [v for v in ctx.inputs.values() if isinstance(v, kind)]
        if len(candidates) != 1:
            raise StrategyError(
                f"step {ctx.step!r} needs one {kind.__name__} input (normally from {name!r}); "
                f"got inputs {sorted(ctx.inputs)}"
            )
        value = candidates[0]
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        try:
            return msgspec.convert(value, kind)
        except msgspec.ValidationError as exc:
            raise StrategyError(
                f"step {ctx.step!r}: input {name!r} is not a valid {kind.__name__}: {exc}"
            ) from exc
    raise StrategyError(
        f"step {ctx.step!r}: input {name!r} is a {type(value).__name__}, expected {kind.__name__}"
    )
