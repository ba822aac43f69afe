"""Hardening of the HTTP endpoint (issue 18, items 5 and 12): slow clients cannot hold it, and
a bad request body gets the right reason. Real sockets on 127.0.0.1, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import engine.service.admin
from engine.service.http import MetricsServer
from tests.integration.test_admin_api import TOKEN, run, serving, write

WAIT_S = 10.0  # a safety bound on each wait, never a duration anyone waits for
AUTH = f"Bearer {TOKEN}"


@contextlib.asynccontextmanager
async def metrics_server(**kw: float) -> AsyncIterator[MetricsServer]:
    server = MetricsServer(
        CollectorRegistry(), host="127.0.0.1", port=0, ready=lambda: (True, "ready"), **kw
    )
    async with server:
        yield server


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _get(port: int, path: str) -> bytes:
    reader, writer = await _open(port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(WAIT_S):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_a_connection_that_never_finishes_its_request_header_is_closed() -> None:
    async def main() -> None:
        async with metrics_server(header_timeout_s=0.5) as server:
            assert server.port is not None
            reader, writer = await _open(server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            async with asyncio.timeout(WAIT_S):
                assert await reader.read() == b""  # closed by the server, no answer
            writer.close()

    run(main)


def test_a_silent_connection_is_closed_at_the_header_timeout() -> None:
    async def main() -> None:
        async with metrics_server(header_timeout_s=0.5) as server:
            assert server.port is not None
            reader, writer = await _open(server.port)
            async with asyncio.timeout(WAIT_S):
                assert await reader.read() == b""
            writer.close()

    run(main)


def test_connections_beyond_the_cap_get_a_503_and_the_endpoint_recovers() -> None:
    async def main() -> None:
        async with metrics_server(header_timeout_s=3.0, max_connections=3) as server:
            port = server.port
            assert port is not None
            slow = [await _open(port) for _ in range(3)]
            for _, writer in slow:
                writer.write(b"GET /healthz HTTP/1.1\r\n")  # and nothing more
            busy = await _get(port, "/healthz")
            assert busy.startswith(b"HTTP/1.1 503"), busy
            assert b"too many connections" in busy
            assert server.refused >= 1
            # The slow ones are cut at the header timeout; then /healthz answers again.
            for reader, writer in slow:
                async with asyncio.timeout(WAIT_S):
                    assert await reader.read() == b""
                writer.close()
            ok = await _get(port, "/healthz")
            assert ok.startswith(b"HTTP/1.1 200"), ok

    run(main)


def test_a_request_body_that_trickles_in_gets_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.service.admin, "BODY_TIMEOUT_S", 0.3)
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            reader, writer = await _open(api.engine.metrics_port or 0)
            writer.write(
                b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ty"
            )
            async with asyncio.timeout(WAIT_S):
                head = await reader.readline()
            assert head.startswith(b"HTTP/1.1 408"), head
            writer.close()
            assert api.engine.statistics().counters.events_received == {}

    run(main)


def test_a_posted_body_with_invalid_utf8_is_rejected_as_invalid_utf8(tmp_path: Path) -> None:
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            async with api.session.post(
                api.base + "/events", data=b'{"type":"DATA_READY","symbol":"\xff"}',
                headers={"Authorization": AUTH},
            ) as resp:
                assert resp.status == 400
                body = await resp.json()
            assert "invalid UTF-8" in body["error"], body
            assert "surrogates" not in body["error"]
            rejected = api.engine.statistics().counters.events_rejected
            assert rejected["invalid_utf8"] == 1
            assert rejected.get("malformed_json", 0) == 0

    run(main)


def test_a_posted_event_repeating_a_key_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path)

    async def main() -> None:
        async with serving(config) as api:
            async with api.session.post(
                api.base + "/events",
                data=b'[{"type":"TASK_COMPLETED","type":"DATA_READY","symbol":"A","ts":1,'
                b'"price":1}]',
                headers={"Authorization": AUTH},
            ) as resp:
                assert resp.status == 400
                body = await resp.json()
            assert "duplicate key 'type'" in body["error"]
            counters = api.engine.statistics().counters
            assert counters.events_rejected["malformed_json"] == 1
            assert counters.events_received == {}

    run(main)
