"""The admin HTTP API, served by the metrics server (engine/service/http.py) on the same address.

| method, path | does |
|---|---|
| ``GET /status`` | JSON snapshot (read-only, no token) |
| ``POST /events`` | inject one event (JSON object) or several (list) |
| ``POST /workflows/{name}/pause`` / ``resume`` | stop / restart dispatching a workflow |
| ``POST /runs/{id}/cancel`` | cancel a live run |
| ``POST /reload`` | re-read the config file (same path as SIGHUP) |

Every ``POST`` needs ``Authorization: Bearer <token>``. The token comes from the file named by
``[admin] token_file`` or from ``$TICKFLOW_ADMIN_TOKEN``, never from the command line (other
users can read a process's arguments). Without a configured token the changing endpoints answer
403: an admin API that anyone on the host could drive is worse than none. A wrong or missing
token gets 401 and changes nothing (the check runs before the body is even read).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
from aiohttp import web

from engine.core import ratelimit
from engine.core.errors import EventError, StorageError
from engine.intake import EventDecoder, duplicate_key
from engine.service.auth import load_admin_token
from engine.service.http import json_response
from engine.service.status import status_document

if TYPE_CHECKING:
    from engine.service.daemon import Engine

__all__ = ["AdminApi"]

log = logging.getLogger("tickflow.admin")
# Clients that misbehave (unauthenticated ones included) must not flood the journal.
_client_log = ratelimit.RateLimitedLog(log)

MAX_BODY_BYTES = 1 << 20  # one request's events; a larger feed belongs on the network intake
BODY_TIMEOUT_S = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminApi:
    """Route handlers bound to one engine; :meth:`register` adds them to an aiohttp app."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._token: bytes | None = None
        self.reload_token()
        # Live input: an object without `type` is rejected (missing_field), as on the intake.
        self._decoder = EventDecoder(engine.config.engine.max_line_bytes)

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def reload_token(self) -> None:
        """(Re-)read the token of the running config."""
        self.set_token(load_admin_token(self.engine.config.admin))

    def set_token(self, token: str | None) -> None:
        """Use ``token`` from now on (a config reload reads it first, then commits it)."""
        self._token = token.encode() if token is not None else None
        if token is None:
            log.info("admin API: no token configured, changing endpoints disabled (403)")

    def register(self, app: web.Application) -> None:
        app.router.add_get("/status", self._status)
        app.router.add_post("/events", self._guarded(self._events))
        app.router.add_post("/workflows/{name}/pause", self._guarded(self._pause))
        app.router.add_post("/workflows/{name}/resume", self._guarded(self._resume))
        app.router.add_post("/runs/{run_id}/cancel", self._guarded(self._cancel))
        app.router.add_post("/reload", self._guarded(self._reload))

    # -- authorisation ----------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> web.Response | None:
        """None when the request may go on; else the refusal to send."""
        token = self._token
        if token is None:
            return json_response(403, {"error": "admin API disabled: no token configured "
                                        "([admin] token_file or TICKFLOW_ADMIN_TOKEN)"})
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest on bytes: constant time whatever the input, non-ASCII included.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token
        ):
            log.warning(
                "admin request refused: bad or missing token",
                extra={"path": request.path, "remote": request.remote},
            )
            return web.Response(
                status=401,
                body=orjson.dumps({"error": "unauthorised: a valid bearer token is required"}),
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="tickflow"'},
            )
        return None

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = self._authorised(request)
            if refusal is not None:
                return refusal
            log.info("admin request", extra={"path": request.path, "remote": request.remote})
            try:
                return await handler(request)
            except ConnectionError as exc:  # the client left mid-request (its body cut short)
                _client_log.warning(
                    "client_gone", "admin request cut short: %s", exc or type(exc).__name__,
                    path=request.path, remote=request.remote,
                )
                return json_response(400, {"error": "request cut short"})

        return guarded

    # -- handlers ---------------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        return json_response(200, msgspec.to_builtins(status_document(self.engine)))

    async def _events(self, request: web.Request) -> web.Response:
        engine = self.engine
        if engine.coordinator is None or not engine.running:
            return json_response(503, {"error": "the engine is not running"})
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            engine.reject("oversized")
            return json_response(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
        try:
            # A client trickling its body must not hold the handler (and its connection).
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await request.read()
        except TimeoutError:
            return json_response(
                408, {"error": f"request body not received within {BODY_TIMEOUT_S:g} s"}
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            # Bad UTF-8 first, as on the intake: orjson words it "surrogates not allowed".
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as uexc:
                engine.reject("invalid_utf8")
                return json_response(400, {"error": f"invalid UTF-8 at byte {uexc.start}"})
            engine.reject("malformed_json")
            return json_response(400, {"error": f"malformed JSON: {exc}"})
        duplicate = duplicate_key(body)  # orjson kept the last value of a repeated key
        if duplicate is not None:
            engine.reject("malformed_json")
            return json_response(400, {"error": f"duplicate key {ascii(duplicate)[:80]}: "
                                        "an event's keys must be unique"})
        items = payload if isinstance(payload, list) else [payload]
        results: list[dict[str, Any]] = []
        accepted = 0
        last_seq: int | None = None
        for index, obj in enumerate(items):
            try:
                event = self._decoder.decode_object(obj)
            except EventError as exc:
                engine.reject(exc.reason)
                results.append(
                    {"index": index, "accepted": False, "reason": exc.reason, "error": str(exc)}
                )
                continue
            try:
                seq = await engine.submit(event)  # waits while the storage writer is behind
            except EventError as exc:  # refused by the engine (a new symbol past the cap)
                results.append(
                    {"index": index, "accepted": False, "reason": exc.reason, "error": str(exc)}
                )
                continue
            if seq is not None:
                last_seq = seq
            accepted += 1
            results.append({"index": index, "accepted": True})
        try:
            # "Accepted" only once journaled (docs/storage.md): answer after the commit.
            await engine.wait_accepted(last_seq)
        except StorageError as exc:
            return json_response(503, {"error": f"storage failed, events not accepted: {exc}"})
        return json_response(
            200, {"accepted": accepted, "rejected": len(items) - accepted, "results": results}
        )

    async def _pause(self, request: web.Request) -> web.Response:
        return self._pause_resume(request, pause=True)

    async def _resume(self, request: web.Request) -> web.Response:
        return self._pause_resume(request, pause=False)

    def _pause_resume(self, request: web.Request, *, pause: bool) -> web.Response:
        name = request.match_info["name"]
        try:
            if pause:
                self.engine.pause(name)
            else:
                self.engine.resume(name)
        except KeyError:
            return json_response(404, {"error": f"unknown workflow {name!r}"})
        log.info(
            "workflow paused" if pause else "workflow resumed", extra={"workflow": name}
        )
        return json_response(200, {"workflow": name, "paused": pause})

    async def _cancel(self, request: web.Request) -> web.Response:
        raw = request.match_info["run_id"]
        try:
            run_id = int(raw)
        except ValueError:
            return json_response(404, {"error": f"no run {raw!r}"})
        if not self.engine.cancel_run(run_id):
            return json_response(404, {"error": f"no live run {run_id}"})
        log.info("run cancelled by operator", extra={"run_id": run_id})
        return json_response(200, {"run_id": run_id, "cancelled": True})

    async def _reload(self, request: web.Request) -> web.Response:
        reloader = self.engine.reloader
        if reloader is None:
            return json_response(
                503, {"error": "reload unavailable: the engine has no config file"}
            )
        report = await reloader.reload_async()
        # 409: another reload is running (refused, not queued); 422: refused, config kept.
        status = {"success": 200, "busy": 409}.get(report.outcome, 422)
        return json_response(status, msgspec.to_builtins(report))
