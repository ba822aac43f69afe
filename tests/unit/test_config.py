"""Config schema, loader, semantic checks and summary."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from engine.config import (
    Config,
    EngineSettings,
    ReplaySettings,
    Retry,
    Route,
    SourceSettings,
    Step,
    Workflow,
    check_config,
    clear_action_cache,
    config_digest,
    describe_route,
    effective_run_in,
    load_config,
    load_config_with_digest,
    loads_config,
    resolve_action,
    summarize,
    topological_order,
)
from engine.core.errors import ConfigError
from tests.unit import config_actions

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
ACTIONS = "tests.unit.config_actions"


def one_workflow(steps: str, *, name: str = "wf", extra: str = "", head: str = "") -> str:
    """A config with one workflow; ``steps`` are ``[[workflows.<name>.steps]]`` bodies
    separated by blank lines."""
    bodies = [body.strip() for body in steps.strip().split("\n\n")]
    tables = "\n\n".join(f"[[workflows.{name}.steps]]\n{body}" for body in bodies)
    return f"{head}\n[workflows.{name}]\npriority = 1\nmax_concurrent = 2\n{extra}\n\n{tables}\n"


def step(name: str, action: str = "async_step", extra: str = "") -> str:
    spec = action if ":" in action else f"{ACTIONS}:{action}"
    return f'name = "{name}"\naction = "{spec}"\n{extra}'


SIMPLE = one_workflow(step("a"))


# --------------------------------------------------------------------------------------------
# Happy path


def test_defaults_match_the_spec() -> None:
    config = loads_config(SIMPLE)
    engine = config.engine
    assert (engine.agents, engine.heap_capacity, engine.seed) == (5, 65536, 0)
    assert (engine.default_symbol_priority, engine.sweep_interval_s) == (2, 5.0)
    assert (engine.market_depth, engine.thread_workers) == (512, 4)
    assert (engine.max_line_bytes, engine.drain_timeout_s) == (65536, 5.0)
    assert config.source.kind == "sim"
    assert config.source.replay is None
    sim = config.source.sim
    assert (sim.symbols, sim.hot_symbols, sim.tick_rate_hz, sim.seed) == (20, 4, 200.0, 1)
    assert (sim.start_price, sim.volatility, sim.spread_bps, sim.cold_priority) == (
        100.0,
        0.001,
        2.0,
        2,
    )
    broker = config.broker
    assert (broker.initial_cash, broker.slippage_bps, broker.fee_bps, broker.order_qty) == (
        1_000_000.0,
        1.0,
        0.5,
        10.0,
    )
    risk = config.risk
    assert (risk.max_position, risk.max_notional, risk.max_orders_per_sec) == (
        1000.0,
        250_000.0,
        20.0,
    )
    assert config.symbols == ()

    workflow = config.workflows["wf"]
    assert workflow.route == Route(min_priority=0, max_priority=None)
    assert (workflow.trigger, workflow.on_busy, workflow.deadline_ms, workflow.enabled) == (
        "DATA_READY",
        "follow_up",
        1000.0,
        True,
    )
    (only,) = workflow.steps
    assert (only.depends_on, only.timeout_ms, only.preemptible, only.run_in, only.params) == (
        (),
        1000.0,
        True,
        "auto",
        {},
    )
    assert only.retry == Retry(
        count=0, backoff_base_ms=10.0, backoff_factor=2.0, backoff_max_ms=1000.0, jitter=0.1
    )


def test_structs_are_frozen() -> None:
    config = loads_config(SIMPLE)
    with pytest.raises(AttributeError):
        config.engine = EngineSettings()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.engine.agents = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.workflows["wf"].steps[0].timeout_ms = 1.0  # type: ignore[misc]


def test_structs_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Route(1, 2)  # type: ignore[call-arg]


def test_full_config_round_trip() -> None:
    text = one_workflow(
        step("a", "cheap_step", 'params = { window = 20, side = "buy" }\nretry = { count = 3 }')
        + "\n\n"
        + step("b", "plain_step", 'depends_on = ["a"]\npreemptible = false\nrun_in = "thread"'),
        extra='on_busy = "skip"\ndeadline_ms = 250\nenabled = false\n'
        "route = { min_priority = 1, max_priority = 3 }",
        head='[[symbols]]\nname = "AAPL"\npriority = 0\n[[symbols]]\nname = "MSFT"\npriority = 3\n'
        '[source]\nkind = "none"\n',
    )
    config = loads_config(text)
    workflow = config.workflows["wf"]
    assert workflow.on_busy == "skip"
    assert workflow.deadline_ms == 250.0
    assert isinstance(workflow.deadline_ms, float)
    assert workflow.enabled is False
    assert workflow.route == Route(min_priority=1, max_priority=3)
    assert workflow.steps[0].params == {"window": 20, "side": "buy"}
    assert workflow.steps[0].retry.count == 3
    assert workflow.step("b").run_in == "thread"
    assert [seed.name for seed in config.symbols] == ["AAPL", "MSFT"]
    assert config.source.kind == "none"


def test_load_config_from_file() -> None:
    config = load_config(CONFIGS / "minimal.toml")
    assert list(config.workflows) == ["only"]
    assert config.workflows["only"].steps[0].action == f"{ACTIONS}:async_step"


def test_route_matches_inclusive_bounds() -> None:
    assert Route().matches(0)
    assert Route().matches(10**6)
    hot = Route(max_priority=0)
    assert hot.matches(0)
    assert not hot.matches(1)
    band = Route(min_priority=1, max_priority=3)
    assert [p for p in range(6) if band.matches(p)] == [1, 2, 3]
    assert not Route(min_priority=1).matches(0)


def test_topological_order_dependencies_first_ties_in_declaration_order() -> None:
    text = one_workflow(
        "\n\n".join(
            [
                step("report", extra='depends_on = ["left", "right"]'),
                step("right", extra='depends_on = ["fetch"]'),
                step("left", extra='depends_on = ["fetch"]'),
                step("fetch"),
                step("audit"),
            ]
        )
    )
    workflow = loads_config(text).workflows["wf"]
    order = topological_order(workflow)
    assert order == ("fetch", "right", "left", "report", "audit")
    assert workflow.topological_order() == order


def test_topological_order_of_a_hand_built_cycle_raises() -> None:
    workflow = Workflow(
        priority=0,
        max_concurrent=1,
        steps=(
            Step(name="a", action=f"{ACTIONS}:async_step", depends_on=("b",)),
            Step(name="b", action=f"{ACTIONS}:async_step", depends_on=("a",)),
        ),
    )
    with pytest.raises(ValueError, match="cycle"):
        topological_order(workflow)


def test_retry_delay_grows_exponentially_within_jitter_bounds() -> None:
    retry = Retry(backoff_base_ms=10.0, backoff_factor=2.0, backoff_max_ms=1000.0, jitter=0.1)
    rng = random.Random(7)
    for attempt, nominal_ms in [(1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0)]:
        for _ in range(200):
            delay = retry.delay_s(attempt, rng)
            assert nominal_ms * 0.9 / 1000 <= delay <= nominal_ms * 1.1 / 1000


def test_retry_delay_never_exceeds_the_cap_and_stays_spread_below_it() -> None:
    retry = Retry(backoff_base_ms=10.0, backoff_factor=2.0, backoff_max_ms=100.0, jitter=0.2)
    rng = random.Random(3)
    delays = [retry.delay_s(attempt, rng) for attempt in range(5, 60) for _ in range(20)]
    assert max(delays) <= 0.100
    assert min(delays) >= 0.080
    # Spread out rather than piled on the cap.
    assert len({round(d, 9) for d in delays}) > len(delays) // 2
    # An attempt number large enough to overflow a float power is still capped, not an error.
    assert retry.delay_s(10_000, rng) <= 0.100


def test_retry_delay_without_jitter_is_exact_and_reproducible() -> None:
    retry = Retry(backoff_base_ms=5.0, backoff_factor=3.0, backoff_max_ms=1000.0, jitter=0.0)
    assert retry.delay_s(1, random.Random(0)) == pytest.approx(0.005)
    assert retry.delay_s(3, random.Random(0)) == pytest.approx(0.045)
    assert retry.delay_s(10, random.Random(0)) == pytest.approx(1.0)
    jittered = Retry()
    first = [jittered.delay_s(n, random.Random(42)) for n in range(1, 6)]
    again = [jittered.delay_s(n, random.Random(42)) for n in range(1, 6)]
    assert first == again


def test_retry_delay_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        Retry().delay_s(0, random.Random(0))


def test_replay_path_resolves_against_the_config_file_directory() -> None:
    config = load_config(CONFIGS / "replay.toml")
    assert config.source.replay is not None
    assert config.source.replay.path == str(CONFIGS / "data" / "ticks.jsonl")
    assert config.source.replay.speed == 0.0
    assert config.source.replay.format == "auto"


def test_replay_path_from_a_relative_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CONFIGS.parent)
    config = load_config(Path("configs") / "replay.toml")
    assert config.source.replay == ReplaySettings(
        path=str(CONFIGS / "data" / "ticks.jsonl"), speed=0.0
    )


def test_replay_absolute_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "ticks.csv"
    text = one_workflow(
        step("a"), head=f'[source]\nkind = "replay"\nreplay = {{ path = "{target}" }}\n'
    )
    config = loads_config(text, path=str(CONFIGS / "x.toml"))
    assert config.source.replay is not None
    assert config.source.replay.path == str(target)


def test_replay_path_of_a_string_config_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = one_workflow(step("a"), head='[source.replay]\npath = "ticks.jsonl"\n')
    config = loads_config(text)
    assert config.source == SourceSettings(
        kind="sim", replay=ReplaySettings(path=str(tmp_path / "ticks.jsonl"))
    )


def test_config_digest_is_sha256_of_the_file_bytes() -> None:
    path = CONFIGS / "minimal.toml"
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert config_digest(path) == expected
    assert config_digest(str(path)) == expected
    config, digest = load_config_with_digest(path)
    assert digest == expected
    assert config == load_config(path)


def test_resolve_action_returns_and_caches_the_callable() -> None:
    clear_action_cache()
    fn = resolve_action(f"{ACTIONS}:cheap_step")
    assert fn is config_actions.cheap_step
    assert resolve_action(f"{ACTIONS}:cheap_step") is fn
    nested = resolve_action(f"{ACTIONS}:Namespace.nested")
    assert nested is config_actions.Namespace.nested


def test_effective_run_in() -> None:
    def mode(action: str, run_in: str = "auto") -> str:
        spec = f"{ACTIONS}:{action}"
        the_step = msgspec.convert({"name": "s", "action": spec, "run_in": run_in}, Step)
        return effective_run_in(the_step, resolve_action(spec)).value

    assert mode("async_step") == "async"
    assert mode("async_step", "inline") == "async"
    assert mode("async_callable") == "async"
    assert mode("cheap_step") == "inline"
    assert mode("plain_step") == "thread"
    assert mode("plain_step", "inline") == "inline"
    assert mode("cheap_step", "thread") == "thread"
    with pytest.raises(ConfigError, match='is async and runs on the event loop: run_in = "thread"'):
        mode("async_step", "thread")


def test_non_preemptible_thread_step_is_fine() -> None:
    config = loads_config(one_workflow(step("a", "plain_step", "preemptible = false")))
    assert config.workflows["wf"].steps[0].preemptible is False


def test_summary_lists_settings_workflows_and_steps_in_order() -> None:
    text = one_workflow(
        step("second", "cheap_step", 'depends_on = ["first"]\ntimeout_ms = 50')
        + "\n\n"
        + step("first", extra="timeout_ms = 100\nretry = { count = 2 }")
        + "\n\n"
        + step("send", "send_order", 'depends_on = ["second"]\npreemptible = false'),
        name="hot",
        extra="route = { max_priority = 0 }",
    )
    summary = summarize(loads_config(text))
    assert "agents 5" in summary
    assert "heap_capacity 65536" in summary
    assert "sim: 20 symbols (4 hot at priority 0, the rest at 2), 200 ticks/s" in summary
    assert "workflow hot" in summary
    assert "priority 1, symbols with priority <= 0, max_concurrent 2, on_busy follow_up" in summary
    lines = summary.splitlines()
    first = next(i for i, line in enumerate(lines) if "1. first" in line)
    assert "timeout 100 ms, retries 2, preemptible, no deps" in lines[first]
    assert "2. second" in lines[first + 1]
    assert "timeout 50 ms, retries 0, preemptible, depends_on first" in lines[first + 1]
    assert "3. send" in lines[first + 2]
    assert "non-preemptible, depends_on second" in lines[first + 2]
    assert len(lines) < 25


def test_describe_route() -> None:
    assert describe_route(Route()) == "all symbols"
    assert describe_route(Route(max_priority=0)) == "symbols with priority <= 0"
    assert describe_route(Route(min_priority=1)) == "symbols with priority >= 1"
    assert describe_route(Route(min_priority=2, max_priority=2)) == "symbols with priority == 2"
    assert describe_route(Route(min_priority=1, max_priority=3)) == "symbols with priority 1..3"


def test_default_toml_matches_the_design_table() -> None:
    # Decoded without the semantic stage, which imports strategies/: this part holds even
    # before the strategy modules exist.
    raw = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    config = msgspec.convert(raw, Config)
    assert config == Config(workflows=config.workflows)  # every other section at its default
    hft = config.workflows["high_freq_trading"]
    assert (hft.priority, hft.route, hft.max_concurrent) == (0, Route(max_priority=0), 3)
    assert [(s.name, s.action, s.timeout_ms, s.retry.count, s.preemptible) for s in hft.steps] == [
        ("collect_data", "strategies.hft:collect_data", 100.0, 2, True),
        ("calculate_signal", "strategies.hft:calculate_signal", 50.0, 0, True),
        ("execute_order", "strategies.hft:execute_order", 200.0, 0, False),
    ]
    assert hft.topological_order() == ("collect_data", "calculate_signal", "execute_order")
    trend = config.workflows["trend_trading"]
    assert (trend.priority, trend.route, trend.max_concurrent) == (2, Route(min_priority=1), 5)
    assert [
        (s.name, s.action, s.timeout_ms, s.retry.count, s.preemptible) for s in trend.steps
    ] == [
        ("collect_trend_data", "strategies.trend:collect_trend_data", 1000.0, 1, True),
        ("calculate_trend", "strategies.trend:calculate_trend", 500.0, 0, True),
    ]
    assert trend.topological_order() == ("collect_trend_data", "calculate_trend")


def _strategies_present() -> bool:
    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("strategies.hft", "strategies.trend")
        )
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(
    not _strategies_present(), reason="strategies.hft / strategies.trend not written yet"
)
def test_default_toml_loads_with_its_actions() -> None:
    config = load_config(ROOT / "config" / "default.toml")
    assert set(config.workflows) == {"high_freq_trading", "trend_trading"}
    assert "workflow high_freq_trading" in summarize(config)


# --------------------------------------------------------------------------------------------
# Decoding errors: file, key path, problem


def test_unknown_key_names_its_own_path_and_suggests() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.engine\.agnets: "
        r"unknown key `agnets` \(did you mean `agents`\?\)$",
    ):
        loads_config("[engine]\nagnets = 5\n" + SIMPLE)


def test_unknown_key_inside_a_workflow_step_names_the_workflow() -> None:
    text = one_workflow(step("a") + "\n\n" + step("b", extra="timeout = 5"), name="trend_trading")
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.trend_trading\.steps\[1\]\.timeout: "
        r"unknown key `timeout` \(did you mean `timeout_ms`\?\)$",
    ) as info:
        loads_config(text)
    assert info.value.path == "<string>"
    assert info.value.key == "$.workflows.trend_trading.steps[1].timeout"


def test_unknown_key_without_a_close_match_lists_the_allowed_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"at \$\.risk\.zzz: unknown key `zzz` \(expected one of: max_position, "
        r"max_notional, max_orders_per_sec\)$",
    ):
        loads_config("[risk]\nzzz = 1\n" + SIMPLE)


def test_unknown_top_level_section() -> None:
    with pytest.raises(ConfigError, match=r"at \$\.brokers: unknown key `brokers` \(did you mean"):
        loads_config("[brokers]\nfee_bps = 1\n" + SIMPLE)


def test_bad_type() -> None:
    with pytest.raises(
        ConfigError, match=r"^<string>:? at \$\.engine\.agents: Expected `int`, got `str`$"
    ):
        loads_config('[engine]\nagents = "five"\n' + SIMPLE)


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ConfigError, match=r"at \$\.engine\.seed: Expected `int`, got `bool`$"):
        loads_config("[engine]\nseed = true\n" + SIMPLE)


def test_scalar_where_a_table_is_expected_speaks_toml() -> None:
    with pytest.raises(ConfigError, match=r"at \$\.engine: Expected `table`, got `int`$"):
        loads_config("engine = 5\n" + SIMPLE)


def test_out_of_range_value_shows_the_bound_and_the_value() -> None:
    text = one_workflow(
        step("a") + "\n\n" + step("b", extra="timeout_ms = 0"), name="trend_trading"
    )
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.trend_trading\.steps\[1\]\.timeout_ms: "
        r"Expected `float` > 0\.0, got 0$",
    ):
        loads_config(text)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[engine]\nagents = 0", r"at \$\.engine\.agents: Expected `int` >= 1, got 0$"),
        (
            "[engine]\nmax_line_bytes = 100",
            r"at \$\.engine\.max_line_bytes: Expected `int` >= 256, got 100$",
        ),
        (
            "[source.sim]\nvolatility = -0.5",
            r"at \$\.source\.sim\.volatility: Expected `float` >= 0\.0, got -0\.5$",
        ),
        (
            "[broker]\ninitial_cash = nan",
            r"at \$\.broker\.initial_cash: Expected `float` > 0\.0, got nan$",
        ),
        (
            '[[symbols]]\nname = ""\npriority = 0',
            r'at \$\.symbols\[0\]\.name: Expected `str` of length >= 1, got ""$',
        ),
        (
            "[[symbols]]\nname = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456'\npriority = 0",
            r"at \$\.symbols\[0\]\.name: Expected `str` of length <= 32",
        ),
    ],
)
def test_out_of_range_settings(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        loads_config(section + "\n" + SIMPLE)


def test_retry_bounds() -> None:
    text = one_workflow(step("a", extra="retry = { jitter = 1.5 }"))
    with pytest.raises(
        ConfigError, match=r"at \$\.workflows\.wf\.steps\[0\]\.retry\.jitter: Expected `float` <= 1"
    ):
        loads_config(text)
    text = one_workflow(step("a", extra="retry = { backoff_factor = 0.5 }"))
    with pytest.raises(ConfigError, match=r"retry\.backoff_factor: Expected `float` >= 1\.0"):
        loads_config(text)


def test_infinite_value_is_rejected() -> None:
    text = one_workflow(step("a", extra="timeout_ms = inf"))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.timeout_ms: "
        r"must be a finite number, got inf$",
    ):
        loads_config(text)


def test_invalid_literal_lists_the_choices() -> None:
    text = one_workflow(step("a"), extra='on_busy = "queue"')
    with pytest.raises(
        ConfigError,
        match=r"at \$\.workflows\.wf\.on_busy: Invalid enum value 'queue'; "
        r'expected one of "follow_up", "skip"$',
    ):
        loads_config(text)


def test_missing_required_field_names_the_key() -> None:
    text = '[workflows.wf]\npriority = 0\n[[workflows.wf.steps]]\nname = "a"\n'
    text += f'action = "{ACTIONS}:async_step"\n'
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.max_concurrent: "
        r"missing required key `max_concurrent`$",
    ):
        loads_config(text)


def test_missing_step_action() -> None:
    text = "[workflows.wf]\npriority = 0\nmax_concurrent = 1\n[[workflows.wf.steps]]\nname = 'a'\n"
    with pytest.raises(
        ConfigError, match=r"at \$\.workflows\.wf\.steps\[0\]\.action: missing required key"
    ):
        loads_config(text)


def test_missing_workflows() -> None:
    with pytest.raises(
        ConfigError, match=r"^<string>:? at \$\.workflows: missing required key `workflows`$"
    ):
        loads_config("[engine]\nagents = 2\n")


def test_empty_workflows_and_empty_steps() -> None:
    with pytest.raises(
        ConfigError, match=r"at \$\.workflows: Expected `table` of length >= 1, got a table$"
    ):
        loads_config("workflows = {}\n")
    with pytest.raises(
        ConfigError,
        match=r"at \$\.workflows\.wf\.steps: Expected `array` of length >= 1, got an array$",
    ):
        loads_config("[workflows.wf]\npriority = 0\nmax_concurrent = 1\nsteps = []\n")


def test_error_in_second_workflow_names_that_workflow() -> None:
    text = one_workflow(step("a"), name="first") + one_workflow(
        step("b", extra="timeout_ms = -1"), name="second"
    )
    with pytest.raises(ConfigError, match=r"at \$\.workflows\.second\.steps\[0\]\.timeout_ms: "):
        loads_config(text)


def test_bad_action_pattern() -> None:
    text = one_workflow('name = "a"\naction = "strategies.hft.calculate_signal"')
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.action: expected an action of the "
        r'form `package\.module:function`, got "strategies\.hft\.calculate_signal"$',
    ):
        loads_config(text)


def test_bad_step_name() -> None:
    text = one_workflow(step("collect data"))
    with pytest.raises(
        ConfigError,
        match=r"at \$\.workflows\.wf\.steps\[0\]\.name: expected a name of letters, digits and "
        r'`_`, not starting with a digit, at most 64 characters, got "collect data"$',
    ):
        loads_config(text)


def test_bad_workflow_name() -> None:
    text = one_workflow(step("a"), name='"high freq"')
    with pytest.raises(
        ConfigError,
        match=r'^<string>:? at \$\.workflows\["high freq"\]: invalid workflow name "high freq": '
        r"expected a name of letters",
    ):
        loads_config(text)


def test_toml_syntax_error_names_file_and_line() -> None:
    path = CONFIGS / "syntax_error.toml"
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}: invalid TOML at line 3, column 9: Invalid value$",
    ) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert info.value.key is None


def test_toml_syntax_error_from_a_string() -> None:
    with pytest.raises(
        ConfigError, match=r"^cfg\.toml: invalid TOML at line 2, column 6: Cannot overwrite a value"
    ):
        loads_config("a = 1\na = 2\n", path="cfg.toml")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}: cannot read config file: No such file or directory$",
    ):
        load_config(path)
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read config file"):
        config_digest(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": cannot read config file: Is a directory$"):
        load_config(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n" + SIMPLE.encode())
    with pytest.raises(ConfigError, match=r"latin1\.toml: config file is not valid UTF-8"):
        load_config(path)


# --------------------------------------------------------------------------------------------
# Semantic errors


def test_cycle_is_named() -> None:
    text = one_workflow(
        "\n\n".join(
            [
                step("start"),
                step("a", extra='depends_on = ["start", "c"]'),
                step("b", extra='depends_on = ["a"]'),
                step("c", extra='depends_on = ["b"]'),
            ]
        )
    )
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[1\]\.depends_on: "
        r"dependency cycle a -> c -> b -> a \(each step depends on the next\)$",
    ):
        loads_config(text)


def test_two_step_cycle() -> None:
    text = one_workflow(
        step("a", extra='depends_on = ["b"]') + "\n\n" + step("b", extra='depends_on = ["a"]')
    )
    with pytest.raises(ConfigError, match=r"dependency cycle a -> b -> a "):
        loads_config(text)


def test_unknown_dependency() -> None:
    text = one_workflow(step("a") + "\n\n" + step("b", extra='depends_on = ["a", "ghost"]'))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[1\]\.depends_on\[1\]: "
        r"unknown step `ghost` \(this workflow's steps: `a`, `b`\)$",
    ):
        loads_config(text)


def test_self_dependency() -> None:
    text = one_workflow(step("a", extra='depends_on = ["a"]'))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.depends_on\[0\]: "
        r"step `a` depends on itself$",
    ):
        loads_config(text)


def test_dependency_listed_twice() -> None:
    text = one_workflow(step("a") + "\n\n" + step("b", extra='depends_on = ["a", "a"]'))
    with pytest.raises(ConfigError, match=r"steps\[1\]\.depends_on\[1\]: `a` is listed twice$"):
        loads_config(text)


def test_duplicate_step_name() -> None:
    text = one_workflow(step("a") + "\n\n" + step("b") + "\n\n" + step("a"))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[2\]\.name: "
        r"duplicate step name `a` \(first defined at steps\[0\]\)$",
    ):
        loads_config(text)


def test_unimportable_module() -> None:
    text = one_workflow(step("a", "tests.unit.no_such_module:run"))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.action: cannot import module "
        r"`tests\.unit\.no_such_module` of action `tests\.unit\.no_such_module:run`: "
        r"no module named `tests\.unit\.no_such_module` \(searched the strategy paths "
        rf"{re.escape(os.getcwd())}, then the installed packages\)$",
    ):
        loads_config(text)


def test_module_whose_own_import_fails() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^cannot import module `tests\.unit\.config_actions_broken` of action "
        r"`tests\.unit\.config_actions_broken:step`: it imports "
        r"`tickflow_config_test_missing_dependency`, which is not installed$",
    ):
        resolve_action("tests.unit.config_actions_broken:step")


def test_missing_attribute() -> None:
    text = one_workflow(step("a", "nope"))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.action: "
        r"`tests\.unit\.config_actions` has no attribute `nope` "
        r"\(action `tests\.unit\.config_actions:nope`\)$",
    ):
        loads_config(text)
    with pytest.raises(
        ConfigError, match=r"^`tests\.unit\.config_actions:Namespace` has no attribute `missing`"
    ):
        resolve_action(f"{ACTIONS}:Namespace.missing")


def test_not_callable() -> None:
    text = one_workflow(step("a", "NOT_CALLABLE"))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.action: "
        r"action `tests\.unit\.config_actions:NOT_CALLABLE` is not callable \(it is int\)$",
    ):
        loads_config(text)


def test_resolve_action_rejects_a_bad_spec() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^invalid action 'os\.path\.join': expected `package\.module:function`$",
    ):
        resolve_action("os.path.join")


def test_order_sending_action_must_not_be_preemptible() -> None:
    text = one_workflow(step("send", "send_order"))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.preemptible: action "
        r"`tests\.unit\.config_actions:send_order` sends orders, and an order once sent is "
        r"never cancelled half-way: set preemptible = false$",
    ):
        loads_config(text)


def test_thread_step_must_not_be_preemptible() -> None:
    text = one_workflow(step("a", "cheap_step", 'run_in = "thread"'))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.preemptible: action "
        r'`tests\.unit\.config_actions:cheap_step` runs in a thread \(run_in = "thread"\); '
        r"a thread cannot be interrupted, so a preempted thread step would keep running: "
        r"set preemptible = false \(or make the action async\)$",
    ):
        loads_config(text)


def test_auto_plain_function_resolves_to_thread_and_must_not_be_preemptible() -> None:
    text = one_workflow(step("a", "plain_step"))
    with pytest.raises(
        ConfigError,
        match=r"steps\[0\]\.preemptible: action `tests\.unit\.config_actions:plain_step` runs in "
        r'a thread \(run_in = "auto" on a plain function not marked @cheap\); a thread cannot be '
        r"interrupted",
    ):
        loads_config(text)


def test_async_action_cannot_be_forced_into_a_thread() -> None:
    text = one_workflow(step("a", extra='run_in = "thread"\npreemptible = false'))
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.steps\[0\]\.run_in: action "
        r"`tests\.unit\.config_actions:async_step` is async and runs on the event loop",
    ):
        loads_config(text)


def test_route_min_above_max() -> None:
    text = one_workflow(step("a"), extra="route = { min_priority = 3, max_priority = 1 }")
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.workflows\.wf\.route\.max_priority: max_priority \(1\) is below "
        r"min_priority \(3\): the route would match no symbol$",
    ):
        loads_config(text)


def test_replay_source_without_replay_table() -> None:
    with pytest.raises(
        ConfigError,
        match=r'^<string>:? at \$\.source\.replay: source\.kind = "replay" needs a '
        r"\[source\.replay\] table with at least `path`$",
    ):
        loads_config('[source]\nkind = "replay"\n' + SIMPLE)


def test_hot_symbols_above_symbols() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^<string>:? at \$\.source\.sim\.hot_symbols: hot_symbols \(5\) must be <= "
        r"symbols \(3\)$",
    ):
        loads_config("[source.sim]\nsymbols = 3\nhot_symbols = 5\n" + SIMPLE)


def test_duplicate_symbol_seed() -> None:
    seeds = "".join(
        f'[[symbols]]\nname = "{name}"\npriority = 1\n' for name in ("AAPL", "MSFT", "AAPL")
    )
    with pytest.raises(
        ConfigError,
        match=r'^<string>:? at \$\.symbols\[2\]\.name: duplicate symbol "AAPL" '
        r"\(already seeded at \$\.symbols\[0\]\)$",
    ):
        loads_config(seeds + SIMPLE)


def test_loader_raises_the_first_problem_and_check_config_returns_all() -> None:
    text = one_workflow(
        step("a", "send_order") + "\n\n" + step("b", extra='depends_on = ["ghost"]'),
        extra="route = { min_priority = 2, max_priority = 1 }",
        head="[source.sim]\nsymbols = 1\nhot_symbols = 2\n",
    )
    with pytest.raises(ConfigError, match=r"at \$\.source\.sim\.hot_symbols: "):
        loads_config(text)
    config = msgspec.convert(tomllib.loads(text), Config)
    keys = [error.key for error in check_config(config, path="x.toml")]
    assert keys == [
        "$.source.sim.hot_symbols",
        "$.workflows.wf.route.max_priority",
        "$.workflows.wf.steps[0].preemptible",
        "$.workflows.wf.steps[1].depends_on[0]",
    ]
    assert all(error.path == "x.toml" for error in check_config(config, path="x.toml"))


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        loads_config("[engine]\nfoo = 1\n" + SIMPLE)
