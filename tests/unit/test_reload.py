"""engine.service.reload: what a config reload changes live, what it leaves for a restart, and the
refusal of an invalid file."""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine.config import load_config_with_digest, loads_config
from engine.service.daemon import Engine
from engine.service.reload import Reloader, apply_config
from engine.service.sdnotify import Notifier
from tests.integration.service_support import NotifySink, wait_until
from tests.unit import run_actions
from tests.unit.engine_harness import data_ready, make_engine, run_async, wait_for

BASE = """
[engine]
agents = 2

[risk]
max_position = 100.0

[workflows.w]
priority = 0
max_concurrent = 1

[[workflows.w.steps]]
name = "a"
action = "tests.unit.run_actions:gated"
"""


def test_apply_before_start_changes_workflows_risk_and_reports_restart_settings() -> None:
    engine, _ = make_engine(BASE)
    new = loads_config(
        textwrap.dedent(BASE)
        .replace("max_concurrent = 1", "max_concurrent = 3")
        .replace("max_position = 100.0", "max_position = 5.0")
        .replace("agents = 2", "agents = 7\ndrain_timeout_s = 1.5")
        + '\n[metrics]\nport = 9999\n'
        + '\n[workflows.x]\npriority = 1\nmax_concurrent = 2\n'
        '[[workflows.x.steps]]\nname = "b"\naction = "tests.unit.run_actions:quick"\n'
    )
    report = apply_config(engine, new, "ab" * 32)
    assert report.outcome == "success"
    assert report.config_version == "ab" * 6
    assert report.workflows_added == ("x",)
    assert report.workflows_changed == ("w",)
    assert report.risk_changed
    assert set(report.restart_required) == {"engine.agents", "metrics.port"}
    assert report.applied == ("engine.drain_timeout_s",)
    assert engine.queue.lanes["w"].max_concurrent == 3
    assert engine.queue.lanes["x"].max_concurrent == 2
    assert set(engine.workflows) == {"w", "x"}
    assert engine.risk.limits.max_position == 5.0
    # engine.config describes what runs: the pool and the metrics address did not change.
    assert engine.config.engine.agents == 2
    assert engine.config.metrics.port != 9999
    assert engine.config.engine.drain_timeout_s == 1.5
    assert engine.config_version == "ab" * 6


def test_runs_in_flight_keep_their_definition_new_runs_use_the_new_one() -> None:
    engine, _ = make_engine(BASE)

    async def main() -> None:
        async with engine.session():
            coordinator = engine.coordinator
            assert coordinator is not None
            engine.submit_nowait(data_ready("S"))
            await wait_for(lambda: run_actions.started("w.a.S") == 1, "the old run's step")
            old_run = next(iter(coordinator.runs.values()))
            new = loads_config(
                textwrap.dedent(BASE)
                .replace('name = "a"', 'name = "b"')
                # Raised live: the old run holds the only slot of max_concurrent = 1.
                .replace("max_concurrent = 1", "max_concurrent = 2")
            )
            engine.reload(new, "cd" * 32)
            assert [s.spec.name for s in old_run.steps] == ["a"]  # unchanged mid-run
            engine.submit_nowait(data_ready("T"))
            await wait_for(lambda: run_actions.started("w.b.T") == 1, "a new run's new step")
            run_actions.release_all()
            await wait_for(lambda: not coordinator.runs, "all runs done")
            runs = engine.statistics().counters.runs["w"]
            assert runs["completed"] == 2

    run_async(main)


def test_reloader_refuses_an_invalid_file_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "tickflow.toml"
    path.write_text(textwrap.dedent(BASE))
    config, digest = load_config_with_digest(path)
    engine = Engine(config, sources=[], config_version=digest[:12], serve_metrics=False,
                    persist=False)
    sink = NotifySink(abstract=True)
    try:
        with Notifier(env={"NOTIFY_SOCKET": sink.address}) as notifier:
            reloader = Reloader(engine, path, notifier=notifier)
            path.write_text("[workflows.w]\npriority = -1\n")
            report = reloader.reload()
            assert report.outcome == "invalid"
            assert report.error is not None
            assert str(path) in report.error
            assert engine.config is config
            assert engine.config_version == digest[:12]
            assert dict(reloader.counts) == {"success": 0, "invalid": 1, "error": 0}
            # systemd hears RELOADING=1 then READY=1 even when the file is refused.
            wait_until(lambda: len(sink.snapshot()) == 2, "two notifications", timeout=5)
            first, second = (m for _, m in sink.snapshot())
            assert first["RELOADING"] == "1"
            assert "MONOTONIC_USEC" in first
            assert second["READY"] == "1"

            path.write_text(textwrap.dedent(BASE).replace("max_concurrent = 1",
                                                          "max_concurrent = 2"))
            report = reloader.reload()
            assert report.outcome == "success"
            assert report.previous_version == digest[:12]
            assert engine.config_version != digest[:12]
            assert dict(reloader.counts) == {"success": 1, "invalid": 1, "error": 0}
            assert reloader.last is report
    finally:
        sink.close()


def test_reload_counter_is_exported() -> None:
    from prometheus_client import generate_latest

    engine, _ = make_engine(BASE)
    text = generate_latest(engine.metrics_registry).decode()
    for outcome in ("success", "invalid", "error"):
        assert f'tickflow_config_reloads_total{{outcome="{outcome}"}} 0.0' in text


def test_requested_reloads_are_served_off_the_loop_one_at_a_time(tmp_path: Path) -> None:
    import asyncio
    import contextlib

    path = tmp_path / "tickflow.toml"
    path.write_text(textwrap.dedent(BASE))
    config, digest = load_config_with_digest(path)
    engine = Engine(config, sources=[], config_version=digest[:12], serve_metrics=False,
                    persist=False)
    reloader = Reloader(engine, path)

    async def scenario() -> None:
        server = asyncio.create_task(reloader.serve_requests())
        try:
            path.write_text(textwrap.dedent(BASE).replace("max_concurrent = 1",
                                                          "max_concurrent = 2"))
            reloader.request()
            reloader.request()  # a burst of SIGHUPs collapses into the reload already asked for
            async with asyncio.timeout(10):
                while reloader.counts["success"] < 1:  # noqa: ASYNC110 - a counter, no event
                    await asyncio.sleep(0.01)  # bounded: the worker thread reads the file
            path.write_text("[workflows.w]\npriority = -1\n")
            report = await reloader.reload_async()
            assert report.outcome == "invalid"
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server

    asyncio.run(scenario())
    assert dict(reloader.counts) == {"success": 1, "invalid": 1, "error": 0}
    assert engine.config.workflows["w"].max_concurrent == 2
