"""A one-screen, human-readable summary of a loaded config (``tickflow validate`` prints it)."""

from __future__ import annotations

from .schema import Config, Route, Step, Workflow, topological_order

__all__ = ["describe_route", "summarize"]

# Seeded symbols beyond this many are counted rather than listed, to keep to one screen.
_MAX_SYMBOLS_SHOWN = 8


def summarize(config: Config) -> str:
    """Engine, source, broker and risk settings, then each workflow with its route and limits
    and its steps in the order they can run."""
    eng = config.engine
    lines = [
        f"engine    agents {eng.agents}, heap_capacity {eng.heap_capacity}, seed {eng.seed}, "
        f"default_symbol_priority {eng.default_symbol_priority}, "
        f"thread_workers {eng.thread_workers}",
        f"          sweep every {_num(eng.sweep_interval_s)} s, market_depth {eng.market_depth}, "
        f"max_line_bytes {eng.max_line_bytes}, drain_timeout {_num(eng.drain_timeout_s)} s",
        f"source    {_describe_source(config)}",
        f"broker    initial_cash {_num(config.broker.initial_cash)}, "
        f"slippage {_num(config.broker.slippage_bps)} bps, fee {_num(config.broker.fee_bps)} bps, "
        f"order_qty {_num(config.broker.order_qty)}",
        f"risk      max_position {_num(config.risk.max_position)}, "
        f"max_notional {_num(config.risk.max_notional)}, "
        f"max_orders_per_sec {_num(config.risk.max_orders_per_sec)}",
        f"symbols   {_describe_symbols(config)}",
    ]
    for name, workflow in config.workflows.items():
        lines.append("")
        lines.extend(_describe_workflow(name, workflow))
    return "\n".join(lines) + "\n"


def describe_route(route: Route) -> str:
    """``symbols with priority <= 0``, ``symbols with priority >= 1``, ``all symbols``..."""
    low, high = route.min_priority, route.max_priority
    if high is None:
        return "all symbols" if low == 0 else f"symbols with priority >= {low}"
    if high < low:
        return "no symbols"
    if low == 0:
        return f"symbols with priority <= {high}"
    if low == high:
        return f"symbols with priority == {low}"
    return f"symbols with priority {low}..{high}"


def _describe_source(config: Config) -> str:
    source = config.source
    if source.kind == "none":
        return "none (events only from sockets and the admin API)"
    if source.kind == "replay" and source.replay is not None:
        replay = source.replay
        speed = "as fast as possible" if replay.speed == 0 else f"{_num(replay.speed)}x speed"
        return f"replay {replay.path} ({replay.format}, {speed})"
    sim = source.sim
    rate = "as fast as possible" if sim.tick_rate_hz == 0 else f"{_num(sim.tick_rate_hz)} ticks/s"
    return (
        f"sim: {sim.symbols} symbols ({sim.hot_symbols} hot at priority 0, the rest at "
        f"{sim.cold_priority}), {rate}, seed {sim.seed}"
    )


def _describe_symbols(config: Config) -> str:
    seeds = config.symbols
    if not seeds:
        return "none seeded (auto-registered on first event)"
    shown = ", ".join(f"{seed.name} (p{seed.priority})" for seed in seeds[:_MAX_SYMBOLS_SHOWN])
    more = len(seeds) - _MAX_SYMBOLS_SHOWN
    return f"{len(seeds)} seeded: {shown}" + (f", ... and {more} more" if more > 0 else "")


def _describe_workflow(name: str, workflow: Workflow) -> list[str]:
    state = "" if workflow.enabled else "  [disabled]"
    lines = [
        f"workflow {name}{state}",
        f"  priority {workflow.priority}, {describe_route(workflow.route)}, "
        f"max_concurrent {workflow.max_concurrent}, on_busy {workflow.on_busy}, "
        f"deadline {_num(workflow.deadline_ms)} ms",
    ]
    try:
        order = topological_order(workflow)
    except ValueError:
        # A hand-built, unchecked config may have a cycle; still show what is there.
        order = tuple(step.name for step in workflow.steps)
    by_name = {step.name: step for step in workflow.steps}
    width = max(len(step_name) for step_name in order)
    for position, step_name in enumerate(order, 1):
        lines.append(f"  {position}. {step_name:<{width}}  {_describe_step(by_name[step_name])}")
    return lines


def _describe_step(step: Step) -> str:
    parts = [
        step.action,
        f"timeout {_num(step.timeout_ms)} ms",
        f"retries {step.retry.count}",
        "preemptible" if step.preemptible else "non-preemptible",
    ]
    if step.run_in != "auto":
        parts.append(f"run_in {step.run_in}")
    parts.append(f"depends_on {', '.join(step.depends_on)}" if step.depends_on else "no deps")
    return ", ".join(parts)


def _num(value: float) -> str:
    """Whole numbers without a trailing ``.0``; others as Python writes them."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
