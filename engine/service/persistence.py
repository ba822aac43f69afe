"""Attaching storage to the daemon's engine: open and recover at start, record every change,
close. It is wiring (it knows the engine and hands the stored books to its broker), so it lives
in the service layer.

The engine calls, in order: :meth:`open` (before its coordinator exists: restores symbols and
the broker's books through ``Broker.restore``), :meth:`attach` (hooks the coordinator, resumes
stored runs), runs
:meth:`StorageWriter.run_forever` in its task group, and :meth:`close` after the drain.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from engine.core.adoption import adopt
from engine.core.errors import BrokerError, StorageError
from engine.core.runs import StepRun
from engine.core.symbols import SymbolStatus
from engine.storage.db import default_db_path, open_database
from engine.storage.lock import StateLock
from engine.storage.recovery import LoadedState, RecoveryReport, load_state
from engine.storage.writer import StorageWriter

if TYPE_CHECKING:
    from engine.config import StorageSettings
    from engine.core.coordinator import Coordinator
    from engine.service.daemon import Engine

__all__ = ["Persistence"]

log = logging.getLogger("tickflow.storage")


class Persistence:
    def __init__(self, engine: Engine, settings: StorageSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.path = default_db_path(settings.path)
        self.writer: StorageWriter | None = None
        self._loaded: LoadedState | None = None
        self.report = RecoveryReport()
        self._lock = StateLock(self.path)

    async def open(self) -> None:
        """Open, migrate and read the database (inside the engine's session: its loop runs)."""
        s = self.settings
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create the state directory: {exc}") from exc
        # Before opening: a second daemon must not even migrate or recover the file.
        self._lock.acquire()
        try:
            conn = await open_database(
                self.path, synchronous=s.synchronous, busy_timeout_ms=s.busy_timeout_ms
            )
        except BaseException:
            self._lock.release()
            raise
        try:
            loaded = await load_state(conn, str(self.path), self.engine.symbols)
            if loaded.books is not None:
                try:
                    self.engine.broker.restore(loaded.books)
                except BrokerError as exc:
                    raise StorageError(f"{self.path}: cannot restore the broker: {exc}") from exc
        except BaseException:
            await conn.close()
            self._lock.release()
            raise
        self._loaded = loaded
        self.writer = StorageWriter(
            conn,
            path=str(self.path),
            broker=self.engine.broker,
            wall=self.engine.clock.wall,
            mono=self.engine.clock.now,
            next_seq=loaded.next_seq,
            commit_interval_s=s.commit_interval_ms / 1000.0,
            gather_max_s=s.commit_gather_max_ms / 1000.0,
            batch_max=s.batch_max,
            backlog_max=s.backlog_max,
            retention_s=s.retention_hours * 3600.0,
            prune_interval_s=s.prune_interval_s,
        )

    def attach(self, coordinator: Coordinator) -> RecoveryReport:
        """Hook the coordinator to the writer and resume the runs found in flight."""
        writer, loaded = self.writer, self._loaded
        assert writer is not None, "open() first"
        assert loaded is not None
        symbols = self.engine.symbols
        coordinator.set_next_run_id(loaded.next_run_id)
        writer.watch(symbols, coordinator)
        coordinator.on_order_finished = self._chain_orders(coordinator.on_order_finished)
        outcomes = {"resumed": 0, "restarted": 0, "dropped": 0}
        reused = 0
        # Stored instants are wall-clock; runs live on the engine's clock. One offset for all
        # of them: two runs created at the same instant stay tied (their order kept).
        offset = self.engine.clock.wall() - self.engine.clock.now()
        for stored in loaded.runs:
            completed = {
                s.name: (s.output, s.attempts, s.preemptions, s.started_us, s.finished_us)
                for s in stored.completed
            }
            if not all(s.encodable for s in stored.completed):
                completed = {}  # an output could not be stored: run it again from the start
            created = None if stored.created_at is None else stored.created_at - offset
            result = adopt(coordinator, stored.id, stored.workflow, stored.symbol, stored.tick,
                                       completed, created)
            outcomes[result] += 1
            if result == "resumed":
                reused += len(completed)
            elif result == "dropped":
                self._drop(stored.id, stored.workflow, stored.symbol)
        for state in symbols:
            if state.status is SymbolStatus.PROCESSING and state.active_runs == 0:
                symbols.mark_pending(state)  # its run did not survive: the sweep re-triggers it
        self.report = RecoveryReport(
            symbols=len(symbols),
            symbols_waiting=len(symbols.waiting()),
            runs_resumed=outcomes["resumed"],
            runs_restarted=outcomes["restarted"],
            runs_dropped=outcomes["dropped"],
            steps_reused=reused,
            positions=loaded.positions,
            fills=loaded.fills,
            next_run_id=loaded.next_run_id,
            journal_seq=loaded.next_seq - 1,
        )
        log.info(
            "recovered state from %s", self.path,
            extra={"path": str(self.path), **msgspec.structs.asdict(self.report)},
        )
        return self.report

    async def close(self) -> None:
        try:
            if self.writer is not None:
                await self.writer.close()
        finally:
            self._lock.release()  # only once the last commit is done

    def _chain_orders(self, previous: Any) -> Any:
        """An order step finished: its order (and fill) go to storage, then to ``previous``."""
        writer = self.writer
        assert writer is not None

        def on_order_finished(step: StepRun) -> None:
            if step.output is not None:
                writer.order(step.output, step.run.id)
            if previous is not None:
                previous(step)

        return on_order_finished

    def _drop(self, run_id: int, workflow: str, symbol: str) -> None:
        log.warning(
            "dropping stored run %s: workflow %r is no longer configured (or disabled)",
            run_id, workflow, extra={"run_id": run_id, "workflow": workflow, "symbol": symbol},
        )
        assert self.writer is not None
        self.writer.dropped_runs.append(run_id)
