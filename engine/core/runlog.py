"""Storage's change log of runs: what the next commit must write, kept as runs change.

It costs a flag test per change (a run changes five or six times) and never holds a finished
run:

* a live run that changed is marked (``run.logged``) and kept by id until it ends: a finished
  run leaves the marks, so they never hold it (thousands of finished runs a commit window can
  see), and taking them never walks the runs in flight (tens of thousands when a burst is
  queued);
* a run that ended other than completed (failed, cancelled, cut by the drain) is logged;
* a completed run's record is made as it ends (:class:`engine.core.records.FinishedRuns`) and
  the run is freed at once.

The coordinator feeds it (only once storage asks, :meth:`Coordinator.track_runs`); the storage
writer takes it at every commit. Compiled in place like :mod:`engine.core.runs`.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.core.fsm import RunState
from engine.core.records import FinishedRuns
from engine.core.runs import Run

__all__ = ["RunLog"]

_TERMINAL_RUN = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})


class RunLog:
    """The runs changed since the writer last took them; ``wake()`` when it stops being empty."""

    __slots__ = ("ended", "finished", "marked", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.ended: list[Run] = []  # runs that ended other than completed, in order
        self.marked: dict[int, Run] = {}  # live runs changed since the last take, by id
        self.finished = FinishedRuns()  # the records of completed runs

    def mark(self, run: Run) -> None:
        """``run`` changed: write it at the next commit."""
        if run.logged:
            return
        if run.state in _TERMINAL_RUN:
            # A step that was still running when its run ended: the run has left the marks
            # (they hold live runs only), so it goes to the log of ended runs.
            self.add_ended(run)
            return
        run.logged = True
        marked = self.marked
        marked[run.id] = run
        if len(marked) == 1:
            self.wake()

    def add_ended(self, run: Run) -> None:
        """``run`` ended other than completed."""
        ended = self.ended
        run.logged = True  # a step still running when it ended logs it again only after a take
        ended.append(run)
        if len(ended) == 1:
            self.wake()

    def add_completed(self, run: Run, offset: float) -> None:
        """``run`` completed: its record is made now (``offset``: wall minus engine time)."""
        finished = self.finished
        finished.add(run, offset)
        if finished.count == 1:
            self.wake()

    def forget(self, run: Run) -> None:
        """``run`` ended: it leaves the marks (the end logs it again)."""
        self.marked.pop(run.id, None)

    def take_changed(self) -> list[Run]:
        """The runs changed since the last take and not completed (each once)."""
        taken = self.ended
        self.ended = []
        marked = self.marked
        if marked:
            self.marked = {}
            taken.extend(marked.values())
        for run in taken:
            run.logged = False
        return taken

    def take_finished(self) -> FinishedRuns:
        """The records of the runs completed since the last take."""
        finished = self.finished
        self.finished = FinishedRuns()
        return finished

    @property
    def count(self) -> int:
        """How many runs the log holds: ended, marked live, and completed."""
        completed: int = self.finished.count
        return len(self.ended) + len(self.marked) + completed
