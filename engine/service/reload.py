"""Live config reload (SIGHUP, ``POST /reload``).

The new file is loaded and validated completely before anything changes, so an invalid file
leaves the daemon exactly as it was. A valid one is applied by :func:`apply_config`:

* workflows: :meth:`Coordinator.set_workflows` -- new runs use the new definitions, runs in
  flight finish on the definition they started with (a run holds its ``WorkflowDef``); lane
  ``max_concurrent`` changes at once; a removed workflow triggers no new run, and its lane stays
  so that the steps of its runs in flight still get dispatched;
* risk limits (:meth:`RiskManager.set_limits`), ``engine.drain_timeout_s`` and
  ``engine.default_symbol_priority`` (both read when used) and the admin token;
* everything else is fixed for the life of the process (agent pool, heap, thread pool, sources,
  broker, storage, metrics address, symbol seeds): a change there is reported as needing a
  restart, and ``engine.config`` keeps the running value so that it always describes what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from engine.config import Config, compile_workflows, load_config_with_digest
from engine.core.errors import ConfigError, TickflowError
from engine.service.auth import load_admin_token
from engine.service.sdnotify import Notifier
from engine.service.trading import risk_limits

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.service.daemon import Engine

__all__ = ["RELOAD_OUTCOMES", "ReloadReport", "Reloader", "apply_config"]

log = logging.getLogger("tickflow.reload")

ReloadOutcome = Literal["success", "invalid", "error", "busy"]
# The outcomes counted in tickflow_config_reloads_total. "busy" (a request refused because a
# reload is still running) is not a reload: it is counted apart, in Reloader.busy_refused.
RELOAD_OUTCOMES: Final[tuple[ReloadOutcome, ...]] = ("success", "invalid", "error")
# How long reading a file and importing its actions may take before the reload is given up as
# an error. The import goes on in its (daemon) thread -- threads cannot be stopped -- and
# further reloads are refused while it does, so at most one such thread ever exists.
LOAD_TIMEOUT_S: Final = 60.0

# Settings read where they are used, so a reload changes them; every other field of these
# sections is fixed when the engine is built.
_LIVE_ENGINE_FIELDS: Final = frozenset({"drain_timeout_s", "default_symbol_priority"})
_LIVE_SECTIONS: Final = frozenset({"engine", "risk", "workflows", "admin"})
# Every other top-level section (source, broker, metrics, storage, intake, symbols, ...).
_RESTART_SECTIONS: Final = tuple(f for f in Config.__struct_fields__ if f not in _LIVE_SECTIONS)


class ReloadReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a reload did (or why it did nothing)."""

    outcome: ReloadOutcome
    config_version: str
    previous_version: str
    error: str | None = None
    workflows_added: tuple[str, ...] = ()
    workflows_removed: tuple[str, ...] = ()
    workflows_changed: tuple[str, ...] = ()
    risk_changed: bool = False
    applied: tuple[str, ...] = ()
    """Settings outside ``workflows`` that took effect (dotted paths)."""
    restart_required: tuple[str, ...] = ()
    """Settings that changed in the file but only take effect after a restart."""


def _changed_fields(old: msgspec.Struct, new: msgspec.Struct, prefix: str) -> list[str]:
    return [
        f"{prefix}.{name}"
        for name in old.__struct_fields__
        if getattr(old, name) != getattr(new, name)
    ]


def apply_config(engine: Engine, new: Config, digest: str) -> ReloadReport:
    """Apply an already validated ``new`` config to a (running or not yet started) engine.

    All or nothing: everything that can fail (compiling the workflows, building the risk
    limits, reading the admin token file) is done before the first change to the engine, so an
    exception leaves the engine exactly as it was.
    """
    old = engine.config
    previous_version = engine.config_version
    version = digest[:12]

    restart: list[str] = []
    engine_changes = _changed_fields(old.engine, new.engine, "engine")
    restart += [p for p in engine_changes if p.split(".", 1)[1] not in _LIVE_ENGINE_FIELDS]
    applied = [p for p in engine_changes if p.split(".", 1)[1] in _LIVE_ENGINE_FIELDS]
    for section in _RESTART_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        if isinstance(before, msgspec.Struct) and isinstance(after, msgspec.Struct):
            restart += _changed_fields(before, after, section)
        else:
            restart.append(section)

    # Actions were resolved by the loader: cannot fail here. engine.seed is fixed for the
    # process, so the steps' rng seeds derive from the running one.
    workflows = compile_workflows(new, seed=old.engine.seed)
    added = tuple(sorted(set(new.workflows) - set(old.workflows)))
    removed = tuple(sorted(set(old.workflows) - set(new.workflows)))
    changed = tuple(
        sorted(n for n in set(old.workflows) & set(new.workflows)
               if old.workflows[n] != new.workflows[n])
    )
    risk_changed = old.risk != new.risk
    limits = risk_limits(new.risk)
    if old.admin != new.admin:
        applied += _changed_fields(old.admin, new.admin, "admin")
    server = engine.metrics_server
    admin = server.admin if server is not None else None
    # Read now (a rotated token file takes effect on reload): an unreadable one refuses the
    # whole reload, before anything below has changed.
    token = load_admin_token(new.admin) if admin is not None else None
    # engine.config describes what runs: live settings from the new file, fixed ones kept.
    live_engine = msgspec.structs.replace(
        old.engine, **{name: getattr(new.engine, name) for name in _LIVE_ENGINE_FIELDS}
    )
    kept: dict[str, Any] = {section: getattr(old, section) for section in _RESTART_SECTIONS}
    running_config = msgspec.structs.replace(new, engine=live_engine, **kept)

    # -- commit: nothing below may fail on a validated config ---------------------------------
    engine.apply_config(running_config, version, workflows, limits if risk_changed else None)
    if admin is not None:
        admin.set_token(token)
    return ReloadReport(
        outcome="success",
        config_version=version,
        previous_version=previous_version,
        workflows_added=added,
        workflows_removed=removed,
        workflows_changed=changed,
        risk_changed=risk_changed,
        applied=tuple(applied),
        restart_required=tuple(restart),
    )


class _LoadFailed(msgspec.Struct, frozen=True):
    """Reading the file failed in a way that is not a :class:`ConfigError` (a bug, a timeout)."""

    error: str


_Loaded = tuple[Config, str] | ConfigError | _LoadFailed


class Reloader:
    """Re-reads one config file on request; SIGHUP and ``POST /reload`` both come here.

    ``adjust`` re-applies command-line overrides (``--metrics-port``) to the new file, so an
    override does not show up as a change needing a restart. Outcomes are counted for
    ``tickflow_config_reloads_total{outcome}``.

    Reading the file imports user code (the actions), which may do anything at import time:
    raise ``SystemExit``, ``KeyboardInterrupt`` or any ``BaseException``, or hang. So the load
    runs in a daemon thread of its own (never the loop's default executor, which the event loop
    joins at exit: a hung import would hold up shutdown), every exception it raises becomes a
    refused reload, and it is waited for at most ``load_timeout_s``.
    """

    def __init__(
        self,
        engine: Engine,
        path: str | os.PathLike[str],
        *,
        notifier: Notifier | None = None,
        adjust: Callable[[Config], Config] | None = None,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.path = Path(path)
        self.notifier = notifier
        self.adjust = adjust
        self.load_timeout_s = load_timeout_s
        self.counts: Counter[str] = Counter(dict.fromkeys(RELOAD_OUTCOMES, 0))
        self.busy_refused = 0
        self.last: ReloadReport | None = None
        self._lock = asyncio.Lock()
        self._requested = asyncio.Event()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """A reload is running, or a timed-out one is still importing in its thread."""
        thread = self._thread
        return self._lock.locked() or (thread is not None and thread.is_alive())

    def reload(self) -> ReloadReport:
        """Reload now, on the calling thread (tests, tools); the daemon uses reload_async()."""
        return self._around(lambda: self._apply(self._load()))

    async def reload_async(self) -> ReloadReport:
        """Reload with the file read, validated and its actions imported in a worker thread:
        only applying the result runs on the event loop. One reload at a time: a request made
        while one runs is refused (outcome ``busy``), not queued."""
        if self.busy:
            return self._refuse_busy()
        async with self._lock:
            notifier = self.notifier
            if notifier is not None:
                notifier.reloading()
            try:
                return self._apply(await self._load_in_thread())
            finally:
                if notifier is not None:
                    notifier.ready(f"config {self.engine.config_version}")

    async def serve_requests(self) -> None:
        """A task body (owned by the session): serve SIGHUP requests made with request().

        Requests made while a reload runs coalesce into one more reload (an Event, not a queue).
        """
        while True:
            await self._requested.wait()
            self._requested.clear()
            try:
                await self.reload_async()
            except Exception:  # a bug, not a bad file: count it, keep serving, keep running
                self.counts["error"] += 1
                log.exception("config reload failed", extra={"config": str(self.path)})

    def request(self) -> None:
        """Ask :meth:`serve_requests` for a reload (safe from a signal handler)."""
        self._requested.set()

    def _around(self, work: Callable[[], ReloadReport]) -> ReloadReport:
        notifier = self.notifier
        if notifier is not None:
            notifier.reloading()
        try:
            return work()
        finally:
            if notifier is not None:
                # READY=1 ends the reload for systemd whether or not it took effect.
                notifier.ready(f"config {self.engine.config_version}")

    def _refuse_busy(self) -> ReloadReport:
        self.busy_refused += 1
        current = self.engine.config_version
        log.warning(
            "config reload refused: another reload is still running",
            extra={"config": str(self.path), "config_version": current},
        )
        return ReloadReport(
            outcome="busy", config_version=current, previous_version=current,
            error="another reload is still running; try again once it has finished",
        )

    async def _load_in_thread(self) -> _Loaded:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_Loaded] = loop.create_future()

        def settle(result: _Loaded) -> None:
            if not done.done():
                done.set_result(result)

        def work() -> None:
            result = self._load()
            # RuntimeError: the loop closed while we imported (the daemon stopped): nobody waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result)

        thread = threading.Thread(target=work, name="tickflow-reload", daemon=True)
        self._thread = thread
        thread.start()
        try:
            async with asyncio.timeout(self.load_timeout_s):
                return await done
        except TimeoutError:
            return _LoadFailed(
                f"reading the config and importing its actions took over "
                f"{self.load_timeout_s:g} s (an action module hangs at import?); "
                "reloads are refused until that import finishes"
            )

    def _load(self) -> _Loaded:
        try:
            return load_config_with_digest(self.path)
        except ConfigError as exc:
            return exc
        except BaseException as exc:  # user code ran (imports): nothing may escape
            return _LoadFailed(f"{type(exc).__name__}: {exc}")

    def _apply(self, loaded: _Loaded) -> ReloadReport:
        engine = self.engine
        if isinstance(loaded, ConfigError):
            return self._refused("invalid", str(loaded))
        if isinstance(loaded, _LoadFailed):
            return self._refused("error", loaded.error)
        config, digest = loaded
        if self.adjust is not None:
            config = self.adjust(config)
        try:
            report = engine.reload(config, digest)
        except TickflowError as exc:  # e.g. an unreadable admin token file: nothing applied
            return self._refused("invalid", str(exc))
        except Exception as exc:  # a bug, not a bad file: keep the daemon up and say so
            log.exception("config reload failed", extra={"config": str(self.path)})
            return self._refused("error", f"{type(exc).__name__}: {exc}", logged=True)
        self.counts["success"] += 1
        self.last = report
        log.info(
            "config reloaded",
            extra={
                "config": str(self.path),
                "config_version": report.config_version,
                "previous_version": report.previous_version,
                "workflows_added": list(report.workflows_added),
                "workflows_removed": list(report.workflows_removed),
                "workflows_changed": list(report.workflows_changed),
                "risk_changed": report.risk_changed,
                "applied": list(report.applied),
            },
        )
        if report.restart_required:
            log.warning(
                "config reload: some changed settings need a restart to take effect",
                extra={"restart_required": list(report.restart_required)},
            )
        return report

    def _refused(
        self, outcome: ReloadOutcome, error: str, *, logged: bool = False
    ) -> ReloadReport:
        current = self.engine.config_version
        self.counts[outcome] += 1
        if not logged:
            log.error(
                "config reload refused, keeping the running config",
                extra={"config": str(self.path), "config_version": current,
                       "outcome": outcome, "error": error},
            )
        report = ReloadReport(
            outcome=outcome, config_version=current, previous_version=current, error=error,
        )
        self.last = report
        return report
