"""What a step's action receives: the contract between the engine and strategy code.

An action is ``def action(ctx: StepContext) -> object`` or ``async def action(ctx) -> object``.
Its return value becomes the step's output, handed to dependent steps via ``ctx.inputs``.
Plain functions decorated with :func:`cheap` run inline on the event loop (they must be quick:
an inline step cannot be preempted or timed out mid-way); other plain functions run in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from engine.core.runs import StepContext

__all__ = [
    "CHEAP_ATTR",
    "SENDS_ORDERS_ATTR",
    "StepContext",
    "cheap",
    "is_cheap",
    "sends_orders",
    "sends_orders_flag",
]

CHEAP_ATTR = "__tickflow_cheap__"
SENDS_ORDERS_ATTR = "__tickflow_sends_orders__"

F = TypeVar("F", bound=Callable[..., Any])


def cheap(fn: F) -> F:
    """Mark a plain function as cheap enough to run inline on the event loop."""
    setattr(fn, CHEAP_ATTR, True)
    return fn


def is_cheap(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, CHEAP_ATTR, False))


def sends_orders(fn: F) -> F:
    """Mark an action that sends orders: config load refuses ``preemptible = true`` for it,
    because an order once sent must never be cancelled half-way."""
    setattr(fn, SENDS_ORDERS_ATTR, True)
    return fn


def sends_orders_flag(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, SENDS_ORDERS_ATTR, False))
