"""Hardening of config reload (issue 18, items 2, 3, 7, 9): user code imported by a reload can
neither kill nor stall the daemon, a reload is all or nothing, and one runs at a time.

In-process engines serve the admin API on a real 127.0.0.1 port; the daemon tests run
``tickflow run`` as a subprocess. Action modules are real files imported from ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import load_config_with_digest
from engine.service.daemon import Engine
from engine.service.reload import Reloader
from tests.integration.daemon import TICKFLOW
from tests.integration.service_support import REPO, Daemon, http, wait_until, write_config
from tests.integration.test_admin_api import TOKEN, run, serving, write

AUTH = f"Bearer {TOKEN}"
GATE_MODULE = "tickflow_hardening_gate"

# What a hostile or broken action module may do at import time.
IMPORT_FAILURES = {
    "sys_exit": "import sys\nsys.exit(3)\n",
    "keyboard_interrupt": "raise KeyboardInterrupt\n",
    "base_exception": "class Boom(BaseException):\n    pass\n\nraise Boom('at import')\n",
    "generator_exit": "raise GeneratorExit\n",
}


def _workflow(name: str, action: str) -> str:
    return textwrap.dedent(f"""
        [workflows.{name}]
        priority = 0
        max_concurrent = 1

        [[workflows.{name}.steps]]
        name = "s"
        action = "{action}"
        """)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event an action module waits on at import: a reload blocked for as long as we like."""
    module = types.ModuleType(GATE_MODULE)
    event = threading.Event()
    module.GATE = event  # type: ignore[attr-defined]
    sys.modules[GATE_MODULE] = module
    try:
        yield event
    finally:
        event.set()
        del sys.modules[GATE_MODULE]


# -- item 2: user code at import -------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(IMPORT_FAILURES))
def test_a_reload_whose_action_module_raises_any_base_exception_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    module = f"hardening_bad_{kind}"
    (tmp_path / f"{module}.py").write_text(IMPORT_FAILURES[kind])
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            before = await api.status()
            config.write_text(config.read_text() + _workflow("bad", f"{module}:step"))
            code, body = await api.call("POST", "/reload", auth=AUTH)
            assert code == 422, body
            assert body["outcome"] == "invalid"
            assert module in body["error"]
            assert body["error"].count("\n") == 0
            after = await api.status()
            assert after["config_version"] == before["config_version"]
            assert set(after["workflows"]) == {"slow"}
            assert after["reloads"] == {"success": 0, "invalid": 1, "error": 0}
            assert api.engine.running

    run(main)
    assert f"hardening_bad_{kind}" not in sys.modules


@pytest.mark.slow
def test_sighup_reload_importing_a_module_that_calls_sys_exit_keeps_the_daemon_running(
    tmp_path: Path,
) -> None:
    (tmp_path / "hardening_exit_daemon.py").write_text(IMPORT_FAILURES["sys_exit"])
    config = tmp_path / "tickflow.toml"
    write_config(config, db=tmp_path / "state.db", drain_timeout_s=1.0)
    daemon = Daemon(config, tmp_path, env={"PYTHONPATH": f"{REPO}:{tmp_path}"})
    try:
        daemon.start()
        version = daemon.status()["config_version"]
        config.write_text(config.read_text() + _workflow("bad", "hardening_exit_daemon:step"))
        daemon.proc.send_signal(signal.SIGHUP)
        refused = daemon.wait_log("config reload refused, keeping the running config")
        assert "SystemExit" in refused["error"]
        status = daemon.status()
        assert status["config_version"] == version
        assert status["reloads"]["invalid"] == 1
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.close()


# -- item 3: all or nothing ------------------------------------------------------------------


def test_a_reload_that_fails_on_the_admin_token_changes_nothing(tmp_path: Path) -> None:
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            before = await api.status()
            assert before["workflows"]["slow"]["max_concurrent"] == 2
            config.write_text(config.read_text().replace("max_concurrent = 2",
                                                         "max_concurrent = 1"))
            (tmp_path / "admin-token").unlink()
            code, body = await api.call("POST", "/reload", auth=AUTH)
            assert code == 422, body
            assert body["outcome"] == "invalid"
            assert "token_file" in body["error"]
            after = await api.status()
            assert after["config_version"] == before["config_version"]
            assert after["workflows"]["slow"]["max_concurrent"] == 2
            assert api.engine.config.workflows["slow"].max_concurrent == 2
            assert api.engine.queue.lanes["slow"].max_concurrent == 2
            # The old token still works (it was never replaced).
            code, _ = await api.call("POST", "/workflows/slow/pause", auth=AUTH)
            assert code == 200

    run(main)


# -- item 7: deeply nested TOML --------------------------------------------------------------


NESTED = "x = " + "[" * 600 + "]" * 600 + "\n"


def test_deeply_nested_toml_is_an_invalid_reload_not_a_500(tmp_path: Path) -> None:
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            config.write_text(NESTED + config.read_text())
            code, body = await api.call("POST", "/reload", auth=AUTH)
            assert code == 422, body
            assert body["outcome"] == "invalid"
            assert "nested" in body["error"]
            assert (await api.status())["reloads"]["invalid"] == 1

    run(main)


# -- item 9: a slow import, a second request -------------------------------------------------


def test_a_second_reload_while_one_runs_is_refused_not_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: threading.Event
) -> None:
    (tmp_path / "hardening_slow_a.py").write_text(
        f"import {GATE_MODULE}\n{GATE_MODULE}.GATE.wait(30)\n\nasync def step(ctx):\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            reloader = api.engine.reloader
            assert reloader is not None
            config.write_text(config.read_text() + _workflow("slowly", "hardening_slow_a:step"))
            first = asyncio.create_task(api.call("POST", "/reload", auth=AUTH))
            for _ in range(10_000):  # bounded: the request reaches the reloader in a few turns
                if reloader.busy:
                    break
                await asyncio.sleep(0.001)
            assert reloader.busy
            code, body = await api.call("POST", "/reload", auth=AUTH)
            assert code == 409, body
            assert body["outcome"] == "busy"
            gate.set()
            code, body = await first
            assert code == 200, body
            assert body["workflows_added"] == ["slowly"]
            assert reloader.busy_refused == 1

    run(main)


def test_an_import_that_outlasts_the_load_timeout_is_an_error_and_blocks_reloads_until_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: threading.Event
) -> None:
    (tmp_path / "hardening_slow_b.py").write_text(
        f"import {GATE_MODULE}\n{GATE_MODULE}.GATE.wait(30)\n\nasync def step(ctx):\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write(tmp_path, token=False)
    loaded, digest = load_config_with_digest(config)
    engine = Engine(loaded, sources=[], serve_metrics=False, persist=False,
                    config_version=digest[:12])
    reloader = Reloader(engine, config, load_timeout_s=0.3)
    config.write_text(config.read_text() + _workflow("slowly", "hardening_slow_b:step"))

    async def main() -> None:
        report = await reloader.reload_async()
        assert report.outcome == "error"
        assert "took over 0.3 s" in (report.error or "")
        assert engine.config_version == digest[:12]
        assert (await reloader.reload_async()).outcome == "busy"  # the import still runs
        gate.set()
        thread = reloader._thread
        assert thread is not None
        await asyncio.to_thread(thread.join, 10)
        assert (await reloader.reload_async()).outcome == "success"
        assert "slowly" in engine.workflows

    run(main)


@pytest.mark.slow
def test_sigterm_during_a_slow_reload_import_stops_within_the_drain_deadline(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "importing"
    (tmp_path / "hardening_sleepy.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(120)  # the slow import under test\n\nasync def step(ctx):\n    return 1\n"
    )
    token = tmp_path / "admin-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    config = tmp_path / "tickflow.toml"
    drain_s = 1.0
    write_config(config, db=tmp_path / "state.db", token_file=token, drain_timeout_s=drain_s)
    daemon = Daemon(config, tmp_path, env={"PYTHONPATH": f"{REPO}:{tmp_path}"})
    outcome: list[object] = []
    try:
        daemon.start()
        config.write_text(config.read_text() + _workflow("sleepy", "hardening_sleepy:step"))

        def post() -> None:
            try:
                outcome.append(http("POST", daemon.url("/reload"), token=TOKEN, timeout=60))
            except OSError as exc:  # the daemon went away mid-request: expected here
                outcome.append(exc)

        poster = threading.Thread(target=post, daemon=True)
        poster.start()
        wait_until(marker.exists, "the slow import to start")
        daemon.proc.send_signal(signal.SIGTERM)
        # Drain deadline + the fixed shutdown margins (intake grace, HTTP shutdown timeout).
        assert daemon.proc.wait(timeout=drain_s + 12) == 0
        poster.join(timeout=10)
        assert outcome
    finally:
        daemon.close()


def test_validate_refuses_deeply_nested_toml_in_one_line(tmp_path: Path) -> None:
    config = write(tmp_path)
    config.write_text(NESTED + config.read_text())
    result = subprocess.run(
        [*TICKFLOW, "validate", str(config)], capture_output=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert "nested too deeply" in lines[0]
    assert str(config) in lines[0]
