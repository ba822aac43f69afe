"""The admin HTTP API on the metrics server: /status, and the token-guarded changing endpoints."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.config import load_config_with_digest
from engine.service.daemon import Engine
from engine.service.reload import Reloader

TOKEN = "s3cret-token"

CONFIG = """
[engine]
agents = 2
drain_timeout_s = 0.05   # the 30 s steps are cancelled at exit, not waited for

[metrics]
port = 0

{admin}

[workflows.slow]
priority = 1
max_concurrent = 2

[[workflows.slow.steps]]
name = "work"
action = "tests.integration.service_support:slow_step"
timeout_ms = 60000.0
params = {{ sleep_s = 30.0 }}
"""

TICK = {"type": "DATA_READY", "symbol": "AAA", "ts": 1_700_000_000.0, "price": 100.0}


def write(tmp: Path, *, token: bool = True, extra: str = "") -> Path:
    admin = ""
    if token:
        token_file = tmp / "admin-token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        admin = f'[admin]\ntoken_file = "{token_file}"'
    path = tmp / "tickflow.toml"
    path.write_text(textwrap.dedent(CONFIG.format(admin=admin)) + extra)
    return path


class Api:
    def __init__(self, engine: Engine, session: aiohttp.ClientSession) -> None:
        self.engine = engine
        self.session = session
        self.base = f"http://127.0.0.1:{engine.metrics_port}"

    async def call(
        self, method: str, path: str, *, auth: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth} if auth is not None else {}
        async with self.session.request(
            method, self.base + path, headers=headers, json=body
        ) as resp:
            return resp.status, await resp.json()

    async def status(self) -> dict[str, Any]:
        code, body = await self.call("GET", "/status")
        assert code == 200
        assert isinstance(body, dict)
        return body


@asynccontextmanager
async def serving(config_path: Path, *, persist: bool = False) -> AsyncIterator[Api]:
    config, digest = load_config_with_digest(config_path)
    engine = Engine(config, sources=[], serve_metrics=True, persist=persist,
                    config_version=digest[:12])
    engine.attach_reloader(Reloader(engine, config_path))
    async with engine.session(), aiohttp.ClientSession() as session:
        yield Api(engine, session)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):  # a safety net against a hang, not a wait
            await main()

    asyncio.run(bounded())


async def _live_run(api: Api) -> int:
    code, body = await api.call("POST", "/events", auth=f"Bearer {TOKEN}", body=TICK)
    assert code == 200, body
    coordinator = api.engine.coordinator
    assert coordinator is not None
    for _ in range(200):  # bounded: the run is created on the same loop turn or the next
        if coordinator.runs:
            return next(iter(coordinator.runs))
        await asyncio.sleep(0)
    raise AssertionError("no run created")


CHANGING = [
    ("POST", "/events", TICK),
    ("POST", "/workflows/slow/pause", None),
    ("POST", "/workflows/slow/resume", None),
    ("POST", "/runs/{run}/cancel", None),
    ("POST", "/reload", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CHANGING)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"{TOKEN}"])
def test_changing_endpoints_refuse_a_missing_or_wrong_token(
    tmp_path: Path, method: str, path: str, body: Any, auth: str | None
) -> None:
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            run_id = await _live_run(api)
            if path.endswith("resume"):
                api.engine.pause("slow")  # so that a resume would change something
            before = await api.status()
            code, answer = await api.call(method, path.format(run=run_id), auth=auth, body=body)
            assert code == 401, answer
            after = await api.status()
            # Nothing changed: same events, paused state, live run, config version, reloads.
            assert after["events"] == before["events"]
            assert after["workflows"] == before["workflows"]
            assert after["runs_in_flight"] == before["runs_in_flight"] == 1
            assert after["config_version"] == before["config_version"]
            assert after["reloads"] == before["reloads"]

    run(main)


def test_without_a_configured_token_changing_endpoints_are_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TICKFLOW_ADMIN_TOKEN", raising=False)
    config = write(tmp_path, token=False)

    async def main() -> None:
        async with serving(config) as api:
            for method, path, body in CHANGING:
                code, answer = await api.call(
                    method, path.format(run=1), auth=f"Bearer {TOKEN}", body=body
                )
                assert code == 403, (path, answer)
                assert "disabled" in answer["error"]
            status = await api.status()
            assert status["events"]["received"] == {}
            assert status["workflows"]["slow"]["paused"] is False

    run(main)


def test_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKFLOW_ADMIN_TOKEN", "env-token")
    config = write(tmp_path, token=False)

    async def main() -> None:
        async with serving(config) as api:
            code, _ = await api.call("POST", "/workflows/slow/pause", auth=f"Bearer {TOKEN}")
            assert code == 401
            code, body = await api.call("POST", "/workflows/slow/pause", auth="Bearer env-token")
            assert code == 200, body
            assert (await api.status())["workflows"]["slow"]["paused"] is True

    run(main)


def test_status_shape(tmp_path: Path) -> None:
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            await _live_run(api)
            status = await api.status()
            assert status["running"] is True
            assert status["config_version"] == api.engine.config_version != ""
            assert status["queue"]["capacity"] == 65536
            assert isinstance(status["queue"]["depth_by_priority"], dict)
            assert status["agents"] == {"total": 2, "busy": 1}
            assert status["runs_in_flight"] == 1
            assert status["workflows"] == {
                "slow": {"priority": 1, "enabled": True, "max_concurrent": 2, "paused": False,
                         "running": 1, "queued": 0},
            }
            assert status["events"]["received"] == {"DATA_READY": 1}
            assert status["storage"] is None  # persist=False
            assert status["recovery"] is None
            assert status["reloads"] == {"success": 0, "invalid": 0, "error": 0}
            for key in ("version", "ready", "ready_reason", "symbols", "runs", "orders"):
                assert key in status

    run(main)


def test_changing_endpoints_work_with_the_token(tmp_path: Path) -> None:
    config = write(tmp_path)
    auth = f"Bearer {TOKEN}"

    async def main() -> None:
        async with serving(config) as api:
            engine = api.engine
            # Events: a list, per-event results, rejections counted by reason.
            batch = [TICK, {**TICK, "symbol": "BBB"}, {"symbol": "X"}, 5,
                     {**TICK, "price": "abc"}]
            code, body = await api.call("POST", "/events", auth=auth, body=batch)
            assert code == 200, body
            assert body["accepted"] == 2
            assert body["rejected"] == 3
            assert [r["accepted"] for r in body["results"]] == [True, True, False, False, False]
            assert [r.get("reason") for r in body["results"][2:]] == [
                "missing_field", "not_object", "bad_field"
            ]
            rejected = engine.statistics().counters.events_rejected
            assert rejected["missing_field"] == rejected["not_object"] == 1
            assert rejected["bad_field"] == 1
            assert engine.statistics().counters.events_received == {"DATA_READY": 2}
            # Not JSON at all: 400 and counted.
            async with api.session.post(
                api.base + "/events", data=b"{nope", headers={"Authorization": auth}
            ) as resp:
                assert resp.status == 400
            assert engine.statistics().counters.events_rejected["malformed_json"] == 1

            # Pause / resume; unknown workflow 404.
            code, _ = await api.call("POST", "/workflows/slow/pause", auth=auth)
            assert code == 200
            assert (await api.status())["workflows"]["slow"]["paused"] is True
            code, _ = await api.call("POST", "/workflows/slow/resume", auth=auth)
            assert code == 200
            assert (await api.status())["workflows"]["slow"]["paused"] is False
            code, _ = await api.call("POST", "/workflows/nope/pause", auth=auth)
            assert code == 404

            # Cancel: a live run once; then (finished) and unknown ids 404.
            coordinator = engine.coordinator
            assert coordinator is not None
            run_id = min(coordinator.runs)
            code, body = await api.call("POST", f"/runs/{run_id}/cancel", auth=auth)
            assert code == 200, body
            for _ in range(500):  # bounded: the cancelled step unwinds within a few turns
                if run_id not in coordinator.runs:
                    break
                await asyncio.sleep(0)
            code, _ = await api.call("POST", f"/runs/{run_id}/cancel", auth=auth)
            assert code == 404
            code, _ = await api.call("POST", "/runs/999999/cancel", auth=auth)
            assert code == 404
            code, _ = await api.call("POST", "/runs/abc/cancel", auth=auth)
            assert code == 404

            # Reload: valid (max_concurrent 2 -> 4), then invalid (kept, 422, counted).
            text = config.read_text().replace("max_concurrent = 2", "max_concurrent = 4")
            config.write_text(text)
            code, body = await api.call("POST", "/reload", auth=auth)
            assert code == 200, body
            assert body["outcome"] == "success"
            assert body["workflows_changed"] == ["slow"]
            status = await api.status()
            assert status["workflows"]["slow"]["max_concurrent"] == 4
            version = status["config_version"]
            config.write_text("not [valid toml")
            code, body = await api.call("POST", "/reload", auth=auth)
            assert code == 422
            assert body["outcome"] == "invalid"
            status = await api.status()
            assert status["config_version"] == version
            assert status["reloads"] == {"success": 1, "invalid": 1, "error": 0}

    run(main)



def test_posted_events_are_answered_only_once_journaled(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "state.db"
    path = write(tmp_path, extra=f'\n[storage]\npath = "{db}"\ncommit_interval_ms = 50\n')

    async def main() -> None:
        async with serving(path, persist=True) as api:
            batch = [TICK, {**TICK, "symbol": "BBB"}]
            code, body = await api.call("POST", "/events", auth=f"Bearer {TOKEN}", body=batch)
            assert code == 200, body
            assert body["accepted"] == 2
            # The answer came after the commit: both journal rows are already on disk.
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                rows = conn.execute("SELECT symbol FROM journal ORDER BY seq").fetchall()
            finally:
                conn.close()
            assert rows == [("AAA",), ("BBB",)]

    run(main)


def test_a_posted_event_for_a_new_symbol_past_the_cap_is_rejected_with_its_reason(
    tmp_path: Path,
) -> None:
    config = write(tmp_path)
    config.write_text(config.read_text().replace("[engine]\n", "[engine]\nmax_symbols = 1\n", 1))

    async def main() -> None:
        async with serving(config) as api:
            batch = [TICK, {**TICK, "symbol": "NEW"}, {**TICK, "price": 101.0}]
            code, body = await api.call("POST", "/events", auth=f"Bearer {TOKEN}", body=batch)
            assert code == 200, body
            assert (body["accepted"], body["rejected"]) == (2, 1)
            assert body["results"][1]["reason"] == "symbol_limit"
            assert body["results"][1]["error"].startswith("symbol_limit: 'NEW'")
            counters = api.engine.statistics().counters
            assert counters.events_rejected["symbol_limit"] == 1
            assert counters.events_received == {"DATA_READY": 2}

    run(main)
