"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and the admin API.

aiohttp serves on the engine's own event loop, so a scrape reads the engine's counters between
two loop turns (no locks, no torn reads), and ``/healthz`` answering at all proves the loop is
turning. The admin routes (``/status``, ``POST /events``, ...) are engine/service/admin.py's,
added when an :class:`~engine.service.admin.AdminApi` is given. A request never blocks the loop on
I/O; a scrape itself costs the loop ~6-9 ms of CPU (docs/monitoring.md, "Cost").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from engine.core.errors import TickflowError
from engine.service.loopmon import LoopMonitor

if TYPE_CHECKING:
    from engine.service.admin import AdminApi

__all__ = [
    "MetricsBindError",
    "MetricsServer",
    "json_response",
]

log = logging.getLogger("tickflow.http")

# The classic text format, which every Prometheus version parses (newer prometheus-client
# versions announce 1.0.0; the body is the same for tickflow's plain metric names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Bounds against slow or idle clients (docs/security.md). A connection must complete a request's
# header within HEADER_TIMEOUT_S of connecting or of its previous response, else it is closed
# (aiohttp's keep-alive timer, which also runs before the first request); past MAX_CONNECTIONS
# open connections a new one gets a 503 at once and is closed, so slow clients cannot use up
# the process's file descriptors (shared with the intake and the database).
HEADER_TIMEOUT_S: Final = 10.0
MAX_CONNECTIONS: Final = 64
# At shutdown, requests still in progress get this long before they are cancelled (aiohttp's
# default is 60 s: a hung POST /reload would hold up the exit well past the drain deadline).
SHUTDOWN_TIMEOUT_S: Final = 2.0
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: 31\r\nConnection: close\r\n\r\n"
    b'{"error":"too many connections"}'
)


def json_response(status: int, body: Any) -> web.Response:
    """A JSON response encoded with orjson (the admin API's too)."""
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json"
    )


class MetricsBindError(TickflowError, OSError):
    """The metrics address could not be bound (in use, not local, no permission)."""


class MetricsServer:
    """An aiohttp site bound to ``host:port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        ready: Callable[[], tuple[bool, str]],
        loop_monitor: LoopMonitor | None = None,
        admin: AdminApi | None = None,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.registry = registry
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.refused = 0  # connections turned away at the cap
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._ready = ready
        self._loop_monitor = loop_monitor
        self._runner: web.AppRunner | None = None
        self.admin = admin
        # client_max_size: the admin API's POST /events is the only body taken (same bound).
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if admin is not None:
            admin.register(app)
        self.app = app

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False,
            keepalive_timeout=self.header_timeout_s, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        try:
            site = _CappedSite(runner, self.host, self.requested_port, owner=self)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise MetricsBindError(
                f"cannot serve metrics on {self.host}:{self.requested_port}: {exc.strerror or exc}"
                " (set [metrics] port, or enabled = false)"
            ) from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        log.info("metrics listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ---------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        monitor = self._loop_monitor
        if monitor is None:
            return json_response(200, {"status": "ok"})
        now = asyncio.get_running_loop().time()
        body = {"lag_s": monitor.lag, "lag_max_s": monitor.max_recent}
        if not monitor.alive(now):
            return json_response(503, {"status": "loop monitor stalled", **body})
        return json_response(200, {"status": "ok", **body})

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, reason = self._ready()
        return json_response(200 if ok else 503, {"status": "ready" if ok else reason})


class _Refuse(asyncio.Protocol):
    """What a connection past the cap gets: a 503 and a close, without reading its request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class _CappedSite(web.TCPSite):
    """A TCP site that refuses connections beyond its owner's ``max_connections``."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, owner: MetricsServer
    ) -> None:
        super().__init__(runner, host, port)
        self._owner = owner

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        owner = self._owner

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= owner.max_connections:
                owner.refused += 1
                return _Refuse()
            return server()

        self._server = await asyncio.get_running_loop().create_server(
            protocol, self._host, self._port, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port, backlog=self._backlog,
        )
