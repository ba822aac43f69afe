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
import logging
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from engine.config import Config, compile_workflows, load_config_with_digest
from engine.core.errors import ConfigError
from engine.service.sdnotify import Notifier
from engine.service.trading import risk_limits

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.service.daemon import Engine

__all__ = ["RELOAD_OUTCOMES", "ReloadReport", "Reloader", "apply_config"]

log = logging.getLogger("tickflow.reload")

ReloadOutcome = Literal["success", "invalid", "error"]
RELOAD_OUTCOMES: Final[tuple[ReloadOutcome, ...]] = ("success", "invalid", "error")

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
    """Apply an already validated ``new`` config to a (running or not yet started) engine."""
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
    coordinator = engine.coordinator
    if coordinator is not None:
        coordinator.set_workflows(workflows)
    else:
        # Not started yet: the coordinator built at start reads engine.workflows.
        for name, wf in workflows.items():
            engine.queue.add_lane(name, wf.max_concurrent)
            engine.counters.workflow(name, tuple(s.name for s in wf.steps))
    engine.workflows = workflows

    risk_changed = old.risk != new.risk
    if risk_changed:
        engine.risk.set_limits(risk_limits(new.risk))
    if old.admin != new.admin:
        applied += _changed_fields(old.admin, new.admin, "admin")

    # engine.config describes what runs: live settings from the new file, fixed ones kept.
    live_engine = msgspec.structs.replace(
        old.engine, **{name: getattr(new.engine, name) for name in _LIVE_ENGINE_FIELDS}
    )
    kept: dict[str, Any] = {section: getattr(old, section) for section in _RESTART_SECTIONS}
    engine.config = msgspec.structs.replace(new, engine=live_engine, **kept)
    engine.config_version = version

    server = engine.metrics_server
    if server is not None and server.admin is not None:
        server.admin.reload_token()  # a rotated token file takes effect on reload
    if engine.dispatcher is not None:
        engine.dispatcher.schedule()  # a raised max_concurrent may make queued steps eligible
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


class Reloader:
    """Re-reads one config file on request; SIGHUP and ``POST /reload`` both come here.

    ``adjust`` re-applies command-line overrides (``--metrics-port``) to the new file, so an
    override does not show up as a change needing a restart. Outcomes are counted for
    ``tickflow_config_reloads_total{outcome}``.
    """

    def __init__(
        self,
        engine: Engine,
        path: str | os.PathLike[str],
        *,
        notifier: Notifier | None = None,
        adjust: Callable[[Config], Config] | None = None,
    ) -> None:
        self.engine = engine
        self.path = Path(path)
        self.notifier = notifier
        self.adjust = adjust
        self.counts: Counter[str] = Counter(dict.fromkeys(RELOAD_OUTCOMES, 0))
        self.last: ReloadReport | None = None
        self._lock = asyncio.Lock()
        self._requested = asyncio.Event()

    def reload(self) -> ReloadReport:
        """Reload now, on the calling thread (tests, tools); the daemon uses reload_async()."""
        return self._around(lambda: self._apply(self._load()))

    async def reload_async(self) -> ReloadReport:
        """Reload with the file read, validated and its actions imported in a worker thread:
        only applying the result runs on the event loop. Reloads run one at a time."""
        async with self._lock:
            notifier = self.notifier
            if notifier is not None:
                notifier.reloading()
            try:
                loaded = await asyncio.to_thread(self._load)
                return self._apply(loaded)
            finally:
                if notifier is not None:
                    notifier.ready(f"config {self.engine.config_version}")

    async def serve_requests(self) -> None:
        """A task body (owned by the session): serve SIGHUP requests made with request()."""
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

    def _load(self) -> tuple[Config, str] | ConfigError:
        try:
            return load_config_with_digest(self.path)
        except ConfigError as exc:
            return exc

    def _apply(self, loaded: tuple[Config, str] | ConfigError) -> ReloadReport:
        engine = self.engine
        current = engine.config_version
        if not isinstance(loaded, ConfigError):
            config, digest = loaded
        else:
            exc = loaded
            self.counts["invalid"] += 1
            log.error(
                "config reload refused, keeping the running config",
                extra={"config": str(self.path), "config_version": current, "error": str(exc)},
            )
            report = ReloadReport(
                outcome="invalid", config_version=current, previous_version=current,
                error=str(exc),
            )
            self.last = report
            return report
        if self.adjust is not None:
            config = self.adjust(config)
        try:
            report = engine.reload(config, digest)
        except Exception as exc:  # a bug, not a bad file: keep the daemon up and say so
            self.counts["error"] += 1
            log.exception("config reload failed", extra={"config": str(self.path)})
            report = ReloadReport(
                outcome="error", config_version=engine.config_version,
                previous_version=current, error=f"{type(exc).__name__}: {exc}",
            )
            self.last = report
            return report
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
