"""Storage records: the rows of runs and symbols that a commit writes, built from live objects.

Compiled in place like :mod:`engine.core.runs` (typed by ``records.pxd``); it sits in the core
because the per-step path makes a run's record the moment the run ends. The storage writer
builds a record for every run that ended or made progress and for every symbol that changed, in
every commit; built in Python, that cost more than the engine spends on the run itself
(docs/storage.md, "Cost").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from engine.core.events import DataReady
from engine.core.fsm import RunState, StepState
from engine.core.layout import CompletedRunRecord, StepRecord, position
from engine.core.symbols import Phase, SymbolStatus
from fastpath import jsonw as _jsonw

__all__ = [
    "FinishedRuns", "JournalLog", "clean_text", "completed_record", "run_record", "run_rows",
    "steps_json", "symbol_batch", "symbol_record",
]

_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
_STEP_PENDING = StepState.PENDING
_STEP_COMPLETED = StepState.COMPLETED
_STEP_RUNNING = StepState.RUNNING
_RUN_COMPLETED = RunState.COMPLETED
_TERMINAL_STEP = frozenset(s for s in StepState if s.terminal)
_TERMINAL_RUN = frozenset(s for s in RunState if s.terminal)
# (RecursionError: an output nested deeper than msgspec goes.)
_UNENCODABLE = (TypeError, msgspec.EncodeError, UnicodeError, RecursionError)
# What a record written piece by piece may meet (an integer beyond a C long long, say): it is
# cut off and written whole by msgspec instead, which also says what cannot be encoded at all.
_UNWRITABLE = (TypeError, OverflowError, msgspec.EncodeError, UnicodeError)
_COMMA = 0x2C
# A msgspec struct's fields in one call: reading them one by one from compiled code costs a
# generic attribute lookup each (the interpreter's own specialisations do not apply there).
_astuple = msgspec.structs.astuple
_US_LIMIT = 9.2e18  # microseconds within a C long long
# Positions the fallback paths read back (engine/core/layout.py declares every record; the
# builders below write its fields in that order, which tests/unit/test_layout.py checks).
_S_OUTPUT = position(StepRecord, "output")
_S_STORED = position(StepRecord, "output_stored")
_R_FINISHED = position(CompletedRunRecord, "finished_us")
_R_STEPS = position(CompletedRunRecord, "steps")


def _us(x: float) -> int:
    """``x`` (microseconds) as an integer, truncated toward zero; OverflowError beyond a C
    long long (the record is then written whole by msgspec, which has no such bound)."""
    if not -_US_LIMIT < x < _US_LIMIT:
        raise OverflowError(f"{x!r} microseconds: beyond a C long long")
    return int(x)


def _number(out: Any, x: Any) -> None:
    """A record's integer or float field, written as msgspec would write that value: the
    writer's fast paths take an int as an int and a float as a float (a field built by hand
    with the other type, or with anything else, goes through msgspec)."""
    if type(x) is int:
        out.integer(x)  # OverflowError beyond a C long long: the record goes whole
    elif type(x) is float:
        out.real(x)
    else:
        out.value(x)


def clean_text(value: str | None) -> str | None:
    """A free-text column (an error, from any exception a strategy raises): a NUL is spelled
    out (SQLite's text functions end a string there), and so is a lone surrogate (it cannot be
    encoded at all)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode()
    return value


def _fix_outputs(steps: tuple[tuple[Any, ...], ...]) -> tuple[tuple[Any, ...], ...]:
    """``steps`` with each output msgspec cannot encode stored as missing (the step's last
    field says so; recovery runs such a run again from its first step), the rest intact."""
    fixed = []
    for step in steps:
        if len(step) > _S_OUTPUT:
            try:
                _encode(step[_S_OUTPUT])
            except _UNENCODABLE:
                missing = list(step)
                missing[_S_OUTPUT] = None
                missing[_S_STORED] = False
                step = tuple(missing)
        fixed.append(step)
    return tuple(fixed)


def steps_json(steps: tuple[tuple[Any, ...], ...]) -> str:
    """A run's steps as one JSON array (its ``steps`` column, :func:`run_record`)."""
    try:
        return _encode(steps).decode()
    except _UNENCODABLE:
        return _encode(_fix_outputs(steps)).decode()


def symbol_record(s: Any) -> tuple[Any, ...]:
    """The stored record of ``s``: phase, status, priority, last_processed (integer
    microseconds: an integer encodes several times faster than a float), last_error,
    last_tick (encoded in place, with the rest of the batch)."""
    error = s.last_error
    processed = s.last_processed
    if processed is not None:
        at = processed
        processed = int(at * 1e6 + 0.5)
    return (
        s.phase._value_, s.status._value_, s.priority, processed,
        None if error is None else clean_text(error), s.last_tick,
    )


def _order_out(r: Any) -> bool:
    """Whether a step of ``r`` that sends orders is running: its run must be stored, under
    its id, so that a restart resumes it with the same client order ids."""
    for st in r.steps:  # noqa: SIM110 -- compiled, any() would build a generator per call
        if st.state is _STEP_RUNNING and st.spec.sends_orders:
            return True
    return False


def _steps(r: Any, trigger_at: float) -> tuple[tuple[Any, ...], ...]:
    """The records of the steps of ``r`` that ran (see :func:`run_record`)."""
    steps: list[tuple[Any, ...]] = []
    for st in r.steps:
        sstate = st.state
        if sstate is _STEP_PENDING and st.attempts == 0 and st.preemptions == 0:
            continue  # never ran: nothing to say about it
        started = st.started_at
        finished = st.finished_at
        error = st.error
        # Through a typed local in the compiled build: C arithmetic, one int object made.
        if started is None:
            start_us = None
        else:
            at = started
            start_us = int((at - trigger_at) * 1e6)
        if finished is None or sstate not in _TERMINAL_STEP:
            end_us = None
        else:
            at = finished
            end_us = int((at - trigger_at) * 1e6)
        output = st.output if sstate is _STEP_COMPLETED else None
        attempts = st.attempts
        if (
            sstate is _STEP_COMPLETED and attempts == 1 and st.preemptions == 0
            and error is None and output is None
        ):
            steps.append((st.spec.name, start_us, end_us))  # the common case, in short
        else:
            # 0.0: not queued since the daemon started (a step restored completed).
            ready = st.ready_at
            ready_us = None if ready == 0.0 else int((ready - trigger_at) * 1e6)
            steps.append((
                st.spec.name, start_us, end_us, sstate._value_, attempts, st.preemptions,
                None if error is None else clean_text(error), output, True, ready_us,
            ))
    return tuple(steps)


def run_record(
    r: Any, offset: float, routes: Callable[[Any], tuple[Any, ...]] | None
) -> tuple[Any, ...] | None:
    """The row of run ``r`` in `run_rows` (id, workflow, symbol, state, outcome, priority,
    tick, tick_ts, created_at, finished_at, error, steps), or None when it need not be stored
    yet. Completed runs go to their commit's block instead (:func:`completed_record`).

    ``offset`` turns the engine's monotonic instants into wall-clock time. ``routes`` (the
    coordinator's, priority -> workflows) decides which runs in flight that have done nothing
    yet are stored: on a symbol routed to this workflow alone, none -- the symbol row committed
    with it (data_ready, or processing with no run left) makes recovery trigger it again with
    the same tick, so its row would only cost. Where routes overlap, such a re-trigger would
    also redo the other workflows' finished runs for that tick, so those runs are stored; so
    are runs stored before (adopted at start) and runs with an order step running.
    A step is a :class:`engine.core.layout.StepRecord` (name, started_us, finished_us, state,
    attempts, preemptions, error, output, output_stored, ready_us), times in integer
    microseconds after the run's creation; a step that completed at its first attempt,
    unpreempted, with no output is just its first three fields (the `steps` view fills in the
    rest). Records are tuples of plain values, which the cyclic collector stops tracking
    (lists it would walk at every pass).
    """
    state = r.state
    terminal = state in _TERMINAL_RUN
    suspended = r.suspended
    if (
        routes is not None and not terminal and not suspended and r.completed == 0
        and not r.stored and len(routes(r.symbol.priority)) <= 1 and not _order_out(r)
    ):
        return None
    trigger_at = r.trigger_at
    steps = _steps(r, trigger_at)
    tick = r.tick
    if suspended:
        # Cut by the shutdown drain: recorded as such, but left in flight so the next start
        # resumes it under the same id instead of redoing its work under a new one.
        state_name, outcome, ended = "running", None, None
        error = f"{r.error or 'shutdown'}; resumed at the next start"
    else:
        finished_at = r.finished_at
        state_name, outcome = state._value_, r.outcome
        ended = None if finished_at is None or not terminal else finished_at + offset
        error = r.error
    return (
        r.id, r.workflow.name, r.symbol.name, state_name, outcome, r.priority, _encode(tick),
        tick.ts, trigger_at + offset, ended, None if error is None else clean_text(error),
        steps,
    )


def completed_record(r: Any, offset: float) -> tuple[Any, ...]:
    """The record of completed run ``r`` in its commit's block (`run_blocks`): id, workflow,
    symbol, priority, tick_ts, created_us, finished_us, steps -- times in integer
    microseconds since the epoch, steps as in :func:`run_record` -- then outcome and error,
    only when not "completed" and none. What every completed run has in common (its state,
    its missing tick) is left to the `runs` view."""
    trigger_at = r.trigger_at
    at = trigger_at + offset
    created = int(at * 1e6 + 0.5)
    finished = r.finished_at
    at = (trigger_at if finished is None else finished) + offset
    ended = int(at * 1e6 + 0.5)
    steps = _steps(r, trigger_at)
    error = r.error
    outcome = r.outcome
    if error is None and outcome == "completed":
        return (r.id, r.workflow.name, r.symbol.name, r.priority, r.tick.ts, created, ended,
                steps)
    return (r.id, r.workflow.name, r.symbol.name, r.priority, r.tick.ts, created, ended,
            steps, outcome, None if error is None else clean_text(error))


# The batch's writer, kept: its buffer is reused from one commit to the next instead of being
# allocated (and faulted in) afresh. A batch is written and taken in one call, on the loop.
_SYMBOLS_OUT = _jsonw.JsonWriter(1 << 16)
_IDLE = Phase.IDLE
_DATA_READY = Phase.DATA_READY
_COMPLETED = SymbolStatus.COMPLETED
_PENDING = SymbolStatus.PENDING
_PROCESSING = SymbolStatus.PROCESSING


def symbol_batch(states: list[Any]) -> str:
    """The records of ``states`` (:func:`symbol_record`) as one JSON object keyed
    ``"id:name"``, written straight out (:func:`_write_symbol`)."""
    out = _SYMBOLS_OUT
    out.truncate(0)  # what an interrupted call left
    out.byte(0x7B)
    for s in states:
        mark = len(out)
        try:
            _write_symbol(out, s)
        except BaseException as exc:
            out.truncate(mark)
            if not isinstance(exc, _UNWRITABLE):
                raise
            out.text(s.key)
            out.byte(0x3A)
            out.value(symbol_record(s))
            out.byte(_COMMA)
    out.close(0x7D)
    return out.take()


def _write_symbol(out: Any, s: Any) -> None:
    """``"id:name":`` and :func:`symbol_record` of ``s``, then a comma, written piece by piece
    (the tick's fields in msgspec's order); a symbol with an error goes through msgspec."""
    if s.last_error is not None:
        raise TypeError("an error text: written whole")
    out.text(s.key)
    out.raw(b':[')
    phase = s.phase
    if phase is _IDLE:
        out.raw(b'"idle",')
    elif phase is _DATA_READY:
        out.raw(b'"data_ready",')
    else:
        raise TypeError(f"unknown phase {phase!r}: written whole")
    status = s.status
    if status is _COMPLETED:
        out.raw(b'"completed",')
    elif status is _PENDING:
        out.raw(b'"pending",')
    elif status is _PROCESSING:
        out.raw(b'"processing",')
    else:
        raise TypeError(f"status {status!r}: written whole")  # failed: it has an error
    _number(out, s.priority)
    processed = s.last_processed
    if processed is None:
        out.raw(b',null,null,')
    else:
        at = processed
        us = _us(at * 1e6 + 0.5)
        out.byte(_COMMA)
        out.integer(us)
        out.raw(b',null,')
    tick = s.last_tick
    if tick is None:
        out.raw(b'null],')
    else:
        out.byte(0x7B)
        _write_tick(out, _astuple(tick))
        out.raw(b'}],')


def _write_tick(out: Any, f: tuple[Any, ...]) -> None:
    """A tick's fields, ``"symbol":...`` to ``"ask":...``, from ``f`` -- a Tick's fields, or
    a DATA_READY's (the same six first, in the same order)."""
    out.raw(b'"symbol":')
    out.text(f[0])
    out.raw(b',"ts":')
    _number(out, f[1])
    out.raw(b',"price":')
    _number(out, f[2])
    out.raw(b',"volume":')
    _number(out, f[3])
    _optional(out, b',"bid":', f[4])
    _optional(out, b',"ask":', f[5])


def _optional(out: Any, key: bytes, x: Any) -> None:
    """``key`` (a comma, the field's name and a colon), then ``x``: a number or null."""
    out.raw(key)
    if x is None:
        out.null()
    else:
        _number(out, x)


class FinishedRuns:
    """The records of the runs completed since the last commit, made when each run ends.

    A completed run's record is built and encoded at once, straight into one buffer, while the
    run is still in the caches; the run and its record are freed there and then. Only bytes
    wait for the commit, which stores them as one block: no object per finished run for the
    cyclic collector to walk, nothing to encode or join at commit time. Holding thousands of
    finished runs (each a dozen containers) until the commit cost more than their records.
    """

    def __init__(self) -> None:
        # The block so far: records, each then a comma. Sized like the last block taken, so
        # that under steady load it is not grown (and copied) again and again.
        self.out = _jsonw.JsonWriter(_block_hint[0])
        self.out.byte(0x5B)
        self.count = 0
        self.unrow: list[int] = []  # ids of runs whose earlier in-flight row must go
        self.first_id = 0
        self.last_id = 0
        self.finished_at = 0.0

    def add(self, r: Any, offset: float) -> None:
        out = self.out
        mark = len(out)
        try:
            finished = _write_completed(out, r, offset) / 1e6
        except BaseException as exc:
            out.truncate(mark)  # what the attempt left
            if not isinstance(exc, _UNWRITABLE):
                raise
            record = completed_record(r, offset)  # the record goes whole through msgspec
            try:
                out.value(record)
            except _UNENCODABLE:
                fixed = list(record)
                fixed[_R_STEPS] = _fix_outputs(record[_R_STEPS])
                out.value(tuple(fixed))
            out.byte(_COMMA)
            finished = record[_R_FINISHED] / 1e6
        self.count += 1
        rid = r.id
        if self.first_id == 0 or rid < self.first_id:
            self.first_id = rid
        if rid > self.last_id:
            self.last_id = rid
        if finished > self.finished_at:
            self.finished_at = finished
        if r.stored:
            self.unrow.append(rid)

    def block(self) -> str:
        """The records as one JSON array."""
        out = self.out
        out.close(0x5D)
        _block_hint[0] = min(max(len(out) + (len(out) >> 2), 4096), 1 << 22)
        return out.take()


_block_hint = [1 << 16]  # the capacity a new FinishedRuns starts with (FinishedRuns.block)


def _write_completed(out: Any, r: Any, offset: float) -> int:
    """:func:`completed_record` of ``r`` and a comma, written piece by piece, for the common
    run: completed, no error, every step that ran completed at its first attempt, unpreempted,
    without output. Anything else raises TypeError (before writing anything of its steps' or
    after: the caller cuts it off) and goes whole through msgspec. Returns ``finished_us``."""
    error = r.error
    if error is not None or r.outcome != "completed":
        raise TypeError("an unusual run: written whole")
    trigger_at = r.trigger_at
    at = trigger_at + offset
    created = _us(at * 1e6 + 0.5)
    finished = r.finished_at
    at = (trigger_at if finished is None else finished) + offset
    ended = _us(at * 1e6 + 0.5)
    out.byte(0x5B)
    _number(out, r.id)
    out.byte(_COMMA)
    out.text(r.workflow.name)
    out.byte(_COMMA)
    out.text(r.symbol.name)
    out.byte(_COMMA)
    _number(out, r.priority)
    out.byte(_COMMA)
    _number(out, r.tick.ts)
    out.byte(_COMMA)
    out.integer(created)
    out.byte(_COMMA)
    out.integer(ended)
    out.raw(b',[')
    for st in r.steps:
        sstate = st.state
        if sstate is _STEP_PENDING and st.attempts == 0 and st.preemptions == 0:
            continue  # never ran: nothing to say about it
        if (
            sstate is not _STEP_COMPLETED or st.attempts != 1 or st.preemptions != 0
            or st.error is not None or st.output is not None
        ):
            raise TypeError("an unusual step: written whole")
        out.byte(0x5B)
        out.text(st.spec.name)
        _after(out, st.started_at, trigger_at)
        _after(out, st.finished_at, trigger_at)
        out.raw(b'],')
    out.close(0x5D)
    out.raw(b'],')
    return ended


def _after(out: Any, when: float | None, trigger_at: float) -> None:
    """A comma, then ``when`` as integer microseconds after ``trigger_at`` (or null)."""
    out.byte(_COMMA)
    if when is None:
        out.null()
    else:
        at = when
        out.integer(_us((at - trigger_at) * 1e6))


class JournalLog:
    """The accepted events since the last commit, encoded as each is accepted, and the count of
    changes the storage writer waits on.

    An event's journal record, ``[seq, received_us, payload]`` (``received_us``: wall-clock
    time in integer microseconds; the payload names its type and symbol), or
    ``[seq, received_us, payload, type, symbol]`` for a payload given as JSON text, goes
    straight into one buffer: nothing per event is left for the commit to encode, and no
    object per event lives until it (thousands of them, surviving into the collector's older
    generations, made it walk every run in flight). ``changes`` counts the journal records and
    every other change the writer is told of (:meth:`note`); at ``signal_at`` it calls
    ``on_signal(changes)``, which wakes the writer or applies backpressure and sets the next
    ``signal_at``.
    """

    def __init__(self, last_seq: int, on_signal: Callable[[int], None]) -> None:
        self.seq = last_seq  # the last seq handed out
        self.offset = 0.0  # wall-clock time minus engine time
        self.on_signal = on_signal
        self.changes = 0
        self.signal_at = 1
        self.out = _jsonw.JsonWriter(1 << 16)
        self.out.byte(0x5B)
        self.count = 0
        self.first_seq = 0
        self.first_at = 0.0
        self.last_at = 0.0

    def add(self, kind: str, event: Any, now: float) -> int:
        """Journal ``event`` (a tagged msgspec struct: its JSON names its type and symbol)
        accepted at engine time ``now``; returns its seq. A ``DATA_READY`` -- nearly every
        event -- is written field by field, as msgspec would (:func:`_write_data_ready`)."""
        at = now + self.offset
        seq = self.seq + 1
        if type(event) is DataReady:
            out = self.out
            mark = len(out)
            try:
                _write_data_ready(out, seq, _us(at * 1e6 + 0.5), event)
            except BaseException as exc:
                out.truncate(mark)  # nothing half-written is left for the commit
                if not isinstance(exc, _UNWRITABLE):
                    raise
            else:
                return self._count(seq, at)
        return self._append((seq, int(at * 1e6 + 0.5), event), at)

    def add_raw(self, kind: str, symbol: str, payload: bytes, at: float) -> int:
        """Journal an event given as its JSON text (stored as it is) received at wall time
        ``at``."""
        return self._append(
            (self.seq + 1, int(at * 1e6 + 0.5), msgspec.Raw(payload), kind, symbol), at
        )

    def _append(self, record: tuple[Any, ...], at: float) -> int:
        """Encode ``record`` (its seq first) and count it."""
        out = self.out
        mark = len(out)
        try:
            out.value(record)
        except BaseException:
            out.truncate(mark)  # nothing half-written is left for the commit
            raise
        out.byte(_COMMA)
        return self._count(record[0], at)

    def _count(self, seq: int, at: float) -> int:
        """Count the record of ``seq``, just written."""
        self.seq = seq
        if self.count == 0:
            self.first_seq = seq
            self.first_at = at
        self.count += 1
        self.last_at = at
        self.note()
        return seq

    def note(self) -> None:
        """Count a change the writer must commit."""
        n = self.changes + 1
        self.changes = n
        if n >= self.signal_at:
            self.on_signal(n)

    def take(self) -> tuple[int, int, int, float, float, str]:
        """The journal so far -- (count, first_seq, last_seq, first_at, last_at, the records as
        one JSON array) -- and a fresh start, the change count included."""
        out = self.out
        out.close(0x5D)
        taken = (self.count, self.first_seq, self.seq, self.first_at, self.last_at, out.take())
        out.byte(0x5B)  # the writer and its buffer are kept for the next commit's records
        self.count = 0
        self.changes = 0
        self.signal_at = 1
        return taken


def _write_data_ready(out: Any, seq: int, received_us: int, e: Any) -> None:
    """The journal record ``[seq, received_us, event]`` of DATA_READY ``e`` and a comma,
    written piece by piece: the event's fields in msgspec's order, its tag first."""
    out.byte(0x5B)
    _number(out, seq)
    out.byte(_COMMA)
    out.integer(received_us)
    f = _astuple(e)  # symbol, ts, price, volume, bid, ask, priority
    out.raw(b',{"type":"DATA_READY",')
    _write_tick(out, f)
    _optional(out, b',"priority":', f[6])
    out.raw(b'}],')


def run_rows(
    runs: list[Any], offset: float, routes: Callable[[Any], tuple[Any, ...]] | None
) -> list[tuple[Any, ...]]:
    """The records of the runs among ``runs`` that need a row of their own (`run_rows`): in
    flight with progress, failed or cancelled. Completed runs are in :class:`FinishedRuns`."""
    rows = []
    for r in runs:
        if r.state is _RUN_COMPLETED:
            continue  # its record was made when it ended (FinishedRuns)
        row = run_record(r, offset, routes)
        if row is not None:
            rows.append(row)
            r.stored = True
    return rows
