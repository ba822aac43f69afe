"""The strategy API: ctx.submit_order's rules, the step's own rng, typed params at load, and
user strategy folders beside the config."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config import compile_workflows, load_config, loads_config
from engine.config.compile import step_seed
from engine.config.params import decode_params
from engine.core.errors import ConfigError, StrategyError
from engine.core.runs import Run
from engine.core.strategy import (
    Broker,
    MarketData,
    Risk,
    Side,
    StepContext,
    Tick,
    params_type,
    strategy_params,
)
from engine.core.symbols import SymbolState
from strategies.broker import PaperBroker
from strategies.hft import OrderParams, SignalParams, calculate_signal, execute_order
from strategies.risk import RiskLimits, RiskManager
from strategies.trend import TrendParams

SYM = "ACME"


def make_ctx(
    *,
    sends_orders: bool = True,
    run_id: int = 1,
    step: str = "order",
    seed: int = 0,
    limits: RiskLimits | None = None,
    broker: PaperBroker | None = None,
) -> StepContext:
    market = MarketData()
    market.record(Tick(SYM, 10.0, 50.0))
    return StepContext(
        run_id, "wf", step, SYM, Tick(SYM, 10.0, 50.0), {}, 1, None, market,
        broker or PaperBroker(1e6, 0.0, 0.0, default_qty=4.0),
        RiskManager(limits or RiskLimits(), lambda: 100.0),
        clock=lambda: 100.0, seed=seed, sends_orders=sends_orders,
    )


# -- ctx.submit_order ---------------------------------------------------------------------------


def test_the_paper_broker_and_risk_manager_implement_the_protocols() -> None:
    ctx = make_ctx()
    assert isinstance(ctx.broker, Broker)
    assert isinstance(ctx.risk, Risk)


def test_submit_order_fills_with_the_default_qty_and_the_step_order_id() -> None:
    ctx = make_ctx(run_id=12)
    result = ctx.submit_order("BUY")
    assert (result.status, result.side, result.qty) == ("filled", Side.BUY, 4.0)
    assert result.fill is not None
    assert result.fill.client_order_id == "wf:12:order"
    assert ctx.broker.position(SYM).qty == 4.0


def test_only_an_order_sending_action_may_send() -> None:
    ctx = make_ctx(sends_orders=False)
    with pytest.raises(StrategyError, match="not marked @sends_orders"):
        ctx.submit_order("BUY", 1.0)
    assert ctx.broker.statistics().orders == 0


@pytest.mark.parametrize(
    ("side", "qty", "message"),
    [("HOLD", 1.0, "side must be BUY or SELL"), ("BUY", 0.0, "positive finite"),
     ("SELL", float("nan"), "positive finite"), ("BUY", True, "positive finite")],
)  # fmt: skip
def test_a_bad_order_is_a_strategy_error_and_sends_nothing(
    side: str, qty: Any, message: str
) -> None:
    ctx = make_ctx()
    with pytest.raises(StrategyError, match=message):
        ctx.submit_order(side, qty)
    assert ctx.broker.statistics().orders == 0


def test_risk_limits_always_apply() -> None:
    ctx = make_ctx(limits=RiskLimits(max_position=3.0))
    result = ctx.submit_order(Side.BUY, 5.0)
    assert (result.status, result.reason, result.fill) == ("rejected", "max_position", None)
    assert ctx.broker.statistics().orders == 0


def test_a_retried_step_gets_its_first_fill_back() -> None:
    broker = PaperBroker(1e6, 0.0, 0.0, default_qty=4.0)
    first = make_ctx(broker=broker, run_id=3).submit_order("SELL", 2.0)
    # The retry is a new context (attempt 2) of the same step: same client order id. Even a
    # different qty (a reloaded param) replays the original order instead of trading again.
    retry = make_ctx(broker=broker, run_id=3).submit_order("SELL", 9.0)
    assert retry.replayed
    assert retry.fill == first.fill
    assert retry.qty == 2.0
    stats = broker.statistics()
    assert (stats.fills, stats.duplicates, stats.position(SYM).qty) == (1, 1, -2.0)


# -- ctx.rng --------------------------------------------------------------------------------------


def test_the_step_rng_is_seeded_by_seed_and_run_and_made_once() -> None:
    draws = [make_ctx(seed=5, run_id=2).rng.random() for _ in range(2)]
    assert draws[0] == draws[1]
    assert make_ctx(seed=5, run_id=3).rng.random() != draws[0]
    assert make_ctx(seed=6, run_id=2).rng.random() != draws[0]
    ctx = make_ctx()
    assert ctx.rng is ctx.rng
    given = random.Random(1)
    assert StepContext(1, "w", "s", SYM, Tick(SYM, 0.0, 1.0), {}, 1, None, MarketData(),
                       PaperBroker(), RiskManager(RiskLimits(), lambda: 0.0), given).rng is given


def test_the_engine_gives_each_step_its_own_rng_not_the_engines() -> None:
    config = loads_config(
        "[engine]\nseed = 11\n[workflows.w]\npriority = 0\nmax_concurrent = 1\n"
        '[[workflows.w.steps]]\nname = "a"\naction = "strategies.hft:collect_data"\n'
        '[[workflows.w.steps]]\nname = "b"\naction = "strategies.hft:collect_data"\n'
    )
    steps = compile_workflows(config)["w"].steps
    assert [s.seed for s in steps] == [step_seed(11, "w", "a"), step_seed(11, "w", "b")]
    assert steps[0].seed != steps[1].seed
    assert step_seed(11, "w", "a") == step_seed(11, "w", "a") != step_seed(12, "w", "a")

    workflow = compile_workflows(config)["w"]
    run = Run(41, workflow, SymbolState(1, SYM, 0), Tick(SYM, 0.0, 1.0), 0, 0.0)
    engine_rng = random.Random(11)
    ctx = run.steps[0].context(
        MarketData(), PaperBroker(), RiskManager(RiskLimits(), lambda: 0.0), lambda: 0.0
    )
    expected = random.Random(steps[0].seed * 2**64 + 41).random()
    engine_rng.random()  # the engine's own draws (retry jitter) do not move the step's
    assert ctx.rng is not engine_rng
    assert ctx.rng.random() == expected


# -- typed params -----------------------------------------------------------------------------

HFT = """
[workflows.high_freq_trading]
priority = 0
max_concurrent = 1

[[workflows.high_freq_trading.steps]]
name = "collect_data"
action = "strategies.hft:collect_data"

[[workflows.high_freq_trading.steps]]
name = "calculate_signal"
action = "strategies.hft:calculate_signal"
depends_on = ["collect_data"]
params = {PARAMS}
"""


def hft(params: str) -> str:
    return HFT.replace("{PARAMS}", params)


def test_the_action_receives_its_params_struct() -> None:
    config = loads_config(hft("{ z_entry = 3, threshold = 0.25 }"))
    params = compile_workflows(config)["high_freq_trading"].steps[1].params
    assert params == SignalParams(z_entry=3.0, threshold=0.25)
    assert params_type(calculate_signal) is SignalParams


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ("{ z_entry = -1 }", ".params.z_entry", "Expected `float` > 0.0, got -1"),
        ("{ z_entyr = 1.0 }", ".params.z_entyr", "did you mean `z_entry`?"),
        ("{ threshold = true }", ".params.threshold", "got true"),
        ("{ z_entry = inf }", ".params.z_entry", "must be a finite number"),
        ("{ min_ticks = 1 }", ".params.min_ticks", ">= 2"),
    ],
)
def test_a_bad_param_is_a_load_error_with_its_key_path(
    tmp_path: Path, params: str, key: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(hft(params))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == f"$.workflows.high_freq_trading.steps[1]{key}"
    assert message in info.value.problem
    assert str(info.value).startswith(f"{path}: at {info.value.key}: ")


def test_a_cross_field_check_is_reported_at_the_params_table() -> None:
    with pytest.raises(ConfigError, match=r"steps\[1\]\.params: TrendParams: `fast` \(9\)"):
        loads_config(
            "[workflows.t]\npriority = 1\nmax_concurrent = 1\n"
            '[[workflows.t.steps]]\nname = "c"\naction = "strategies.trend:collect_trend_data"\n'
            '[[workflows.t.steps]]\nname = "t"\naction = "strategies.trend:calculate_trend"\n'
            'depends_on = ["c"]\nparams = { fast = 9, slow = 9 }\n'
        )
    assert decode_params(calculate_signal, {}) == SignalParams()
    assert decode_params(execute_order, {"qty": 1}) == OrderParams(qty=1.0)
    with pytest.raises(ConfigError, match="TrendParams"):
        decode_params(strategy_params(TrendParams)(lambda ctx: None), {"fast": 3, "slow": 2})


def test_strategy_params_needs_a_struct() -> None:
    with pytest.raises(StrategyError, match=r"msgspec\.Struct"):
        strategy_params(dict)  # type: ignore[type-var]


# -- [strategies] paths -----------------------------------------------------------------------

USER_MODULE = '''
from engine.core.strategy import Context, cheap, sends_orders


@cheap
def fetch(ctx: Context[object]) -> float:
    return ctx.tick.price


@sends_orders
def threaded_order(ctx: Context[object]) -> None:
    ctx.submit_order("BUY")
'''


def user_config(folder: Path, action: str, *, head: str = "") -> Path:
    path = folder / "tickflow.toml"
    path.write_text(
        f"{head}\n[workflows.w]\npriority = 0\nmax_concurrent = 1\n"
        f'[[workflows.w.steps]]\nname = "a"\naction = "{action}"\npreemptible = false\n'
    )
    return path


@pytest.fixture
def elsewhere(tmp_path: Path) -> Any:
    """A working directory unrelated to the config; sys.path restored afterwards."""
    cwd, path, modules = os.getcwd(), list(sys.path), set(sys.modules)
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.chdir(other)
    try:
        yield other
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name.startswith("user_strats_"):
                del sys.modules[name]


def test_a_module_beside_the_config_is_found_from_any_directory(
    tmp_path: Path, elsewhere: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "user_strats_a.py").write_text(USER_MODULE)
    config = load_config(user_config(conf, "user_strats_a:fetch"))
    assert config.strategies.paths == (str(conf),)
    assert compile_workflows(config)["w"].steps[0].fn.__module__ == "user_strats_a"


def test_paths_are_relative_to_the_config_file(tmp_path: Path, elsewhere: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "user_strats_b.py").write_text(USER_MODULE)
    conf = tmp_path / "conf"
    conf.mkdir()
    path = user_config(conf, "user_strats_b:fetch", head='[strategies]\npaths = ["../lib"]')
    assert load_config(path).strategies.paths == (str(lib),)


def test_an_unimportable_action_names_the_folders_searched(
    tmp_path: Path, elsewhere: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(user_config(conf, "user_strats_missing:fetch"))
    assert info.value.key == "$.workflows.w.steps[0].action"
    assert f"no module named `user_strats_missing` (searched the strategy paths {conf}" in str(
        info.value
    )


def test_a_missing_strategy_folder_is_a_config_error(tmp_path: Path, elsewhere: Path) -> None:
    with pytest.raises(ConfigError, match=r"at \$\.strategies\.paths\[1\]: strategy folder .*nope"):
        load_config(
            user_config(tmp_path, "strategies.hft:collect_data",
                        head='[strategies]\npaths = [".", "nope"]')
        )


def test_an_order_sending_action_may_not_run_in_a_thread(tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "user_strats_c.py").write_text(USER_MODULE)
    with pytest.raises(ConfigError, match=r"steps\[0\]\.run_in: .*sends orders and would run"):
        load_config(user_config(tmp_path, "user_strats_c:threaded_order"))


def test_a_config_inside_a_package_does_not_make_the_package_an_import_root(
    tmp_path: Path, elsewhere: Path
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    assert load_config(user_config(package, "strategies.hft:collect_data")).strategies.paths == ()
    shipped = Path(__file__).resolve().parents[2] / "engine" / "default.toml"
    assert load_config(shipped).strategies.paths == ()
    assert str(shipped.parent) not in sys.path
    plain = tmp_path / "plain"
    plain.mkdir()
    assert load_config(user_config(plain, "strategies.hft:collect_data")).strategies.paths == (
        str(plain),
    )
