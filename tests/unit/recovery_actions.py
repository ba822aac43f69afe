"""Step actions for the recovery tests: they record every call."""

from __future__ import annotations

from typing import Any

from engine.core.strategy import StepContext, cheap

CALLS: list[tuple[str, int, float, dict[str, Any]]] = []


@cheap
def first(ctx: StepContext) -> dict[str, Any]:
    CALLS.append(("first", ctx.run_id, ctx.tick.price, dict(ctx.inputs)))
    return {"value": ctx.tick.price * 2}


@cheap
def second(ctx: StepContext) -> dict[str, Any]:
    CALLS.append(("second", ctx.run_id, ctx.tick.price, dict(ctx.inputs)))
    return {"seen": ctx.inputs["first"]["value"]}


GATE: dict[str, Any] = {}


async def gated(ctx: StepContext) -> str:
    """Waits on GATE["event"] (an asyncio.Event the test creates) unless GATE["open"]."""
    CALLS.append(("gated", ctx.run_id, ctx.tick.price, dict(ctx.inputs)))
    if "started" in GATE:
        GATE["started"].set()
    if not GATE.get("open"):
        await GATE["event"].wait()
    return "done"


@cheap
def fail_now(ctx: StepContext) -> None:
    CALLS.append(("fail_now", ctx.run_id, ctx.tick.price, dict(ctx.inputs)))
    raise RuntimeError("fails at once")


@cheap
def nothing(ctx: StepContext) -> None:
    """A step without output."""
    CALLS.append(("nothing", ctx.run_id, ctx.tick.price, dict(ctx.inputs)))
