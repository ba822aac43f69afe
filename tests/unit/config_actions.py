"""Stand-in step actions for the config tests: one of each kind the loader tells apart."""

from __future__ import annotations

from typing import Any

from engine.core.strategy import StepContext, cheap, sends_orders

NOT_CALLABLE = 42


@cheap
def cheap_step(ctx: StepContext) -> int:
    return 1


async def async_step(ctx: StepContext) -> int:
    return 2


def plain_step(ctx: StepContext) -> int:
    return 3


@sends_orders
async def send_order(ctx: StepContext) -> dict[str, Any]:
    return {"client_order_id": ctx.client_order_id}


class _AsyncCallable:
    async def __call__(self, ctx: StepContext) -> int:
        return 4


async_callable = _AsyncCallable()


class Namespace:
    """For dotted attribute specs: ``tests.unit.config_actions:Namespace.nested``."""

    @staticmethod
    async def nested(ctx: StepContext) -> int:
        return 5
