"""Plumbing shared by the strategy steps: the action vocabulary, parameter readers, input lookup.

Every step reads its tunables from ``ctx.params`` (the step's ``params`` table in TOML). A missing
key falls back to a default; a key that is present but unusable is a configuration mistake and
raises :class:`StrategyError` rather than silently trading on a default the user did not choose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import msgspec

from engine.core.context import StepContext
from engine.core.errors import TickflowError

__all__ = [
    "Action",
    "StrategyError",
    "clamp",
    "find_input",
    "param_float",
    "param_int",
]

Action = Literal["BUY", "SELL", "HOLD"]

T = TypeVar("T")


class StrategyError(TickflowError, ValueError):
    """A strategy step was misconfigured (bad param) or wired to the wrong inputs."""


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``; NaN maps to ``low`` so it can never leak downstream."""
    if math.isnan(value):
        return low
    return max(low, min(high, value))


def param_float(
    params: Mapping[str, Any],
    key: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
) -> float:
    """A finite float param, ``default`` when absent; out-of-range values raise StrategyError."""
    raw = params.get(key, default)
    # bool is an int subclass: `threshold = true` in TOML is a typo, not 1.0.
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise StrategyError(f"param {key!r} must be a number, got {raw!r}")
    value = float(raw)
    if not math.isfinite(value):
        raise StrategyError(f"param {key!r} must be finite, got {raw!r}")
    if minimum is not None:
        if exclusive_minimum and value <= minimum:
            raise StrategyError(f"param {key!r} must be > {minimum}, got {raw!r}")
        if value < minimum:
            raise StrategyError(f"param {key!r} must be >= {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise StrategyError(f"param {key!r} must be <= {maximum}, got {raw!r}")
    return value


def param_int(params: Mapping[str, Any], key: str, default: int, *, minimum: int = 1) -> int:
    """An integer param, ``default`` when absent; must be ``>= minimum``."""
    raw = params.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise StrategyError(f"param {key!r} must be an integer, got {raw!r}")
    if raw < minimum:
        raise StrategyError(f"param {key!r} must be >= {minimum}, got {raw!r}")
    return raw


def find_input(ctx: StepContext, name: str, kind: type[T]) -> T:
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
