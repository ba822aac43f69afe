"""Storage records written piece by piece (``engine.core.records`` on the JSON writer) read back
as the records msgspec encodes: a commit's symbol batch, a block of completed runs, a block of
the journal."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import compile_workflows, loads_config
from engine.core.events import DataReady, HighPriorityArrived, Tick
from engine.core.fsm import RunState, StepState
from engine.core.records import (
    FinishedRuns,
    JournalLog,
    completed_record,
    symbol_batch,
    symbol_record,
)
from engine.core.runs import Run
from engine.core.symbols import SymbolState, SymbolTable

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _same(ours: str, theirs: bytes) -> None:
    """Our text and msgspec's hold the same values, types and signs included (read back and
    written again by msgspec: 100 and 100.0, 0.0 and -0.0 differ there)."""
    assert _encode(_decode(ours)) == _encode(_decode(theirs))

CONFIG = """
[workflows.wf]
priority = 1
max_concurrent = 1
[[workflows.wf.steps]]
name = "a"
action = "tests.unit.run_actions:quick"
[[workflows.wf.steps]]
name = "b_2"
action = "tests.unit.run_actions:quick"
depends_on = ["a"]
[[workflows.wf.steps]]
name = "c"
action = "tests.unit.run_actions:quick"
depends_on = ["a"]
"""

# Names with quotes, backslashes, control characters and non-ASCII text; not lone surrogates,
# which cannot be encoded at all (a symbol name is validated text).
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
# Market-data values as they come (counts of cents, of millionths), any float at all, and an
# int where a float belongs (a struct built by hand).
reals = st.one_of(
    st.integers(0, 10**12).map(lambda v: v / 100),
    st.integers(-(10**15), 10**15).map(lambda v: v / 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**64), 2**64),
)
# Beyond a C long long too, and a float where an int belongs (a struct built by hand).
priorities = st.one_of(st.integers(0, 9), st.integers(0, 2**70), st.floats())
fates = st.sampled_from(["idle", "ready", "processing", "completed", "failed"])
# When a symbol was processed: an engine time in seconds (its microseconds are an integer).
times = st.floats(-1e12, 1e12)


@given(
    st.lists(
        st.tuples(names, priorities, reals, reals, st.none() | reals, fates, times), max_size=6
    )
)
def test_a_symbol_batch_reads_back_as_the_symbols_records(
    symbols: list[tuple[str, int, float, float, float | None, str, float]],
) -> None:
    table = SymbolTable()
    states = []
    for i, (name, priority, ts, price, bid, fate, when) in enumerate(symbols):
        state = table.register(f"{i}:{name}", priority)
        if fate != "idle":
            table.mark_data_ready(state, Tick(state.name, ts, price, 1.0, bid, None))
        if fate in ("processing", "completed", "failed"):
            table.mark_processing(state)
        if fate == "completed":
            table.mark_completed(state, when)
        elif fate == "failed":
            table.mark_failed(state, f"boom \x00 {name}", when)
        states.append(state)
    _same(symbol_batch(states), _encode({s.key: symbol_record(s) for s in states}))


def _run(wf: Any, run_id: int, spec: dict[str, Any]) -> Run:
    run = Run(run_id, wf, SymbolState(run_id, spec["symbol"], 1), Tick(spec["symbol"],
              spec["ts"], 2.0), spec["priority"], 10.0)
    for i, step in enumerate(run.steps):
        if i == 2 and spec["skip_last"]:
            continue  # never ran: left out of the record
        step.advance(StepState.RUNNING)
        step.started_at, step.attempts = 10.0 + i * 0.001, spec["attempts"]
        step.preemptions = spec["preemptions"]
        step.output = spec["output"]
        step.advance(StepState.COMPLETED)
        step.finished_at = None if spec["unfinished"] else 10.5 + i * 0.25
    run.advance(RunState.RUNNING)
    run.advance(RunState.COMPLETED)
    run.finished_at, run.outcome, run.error = 11.0, spec["outcome"], spec["error"]
    return run


runs = st.fixed_dictionaries({
    "symbol": names,
    "ts": reals,
    "priority": priorities,
    "attempts": st.sampled_from([1, 1, 2]),
    "preemptions": st.sampled_from([0, 0, 1]),
    "output": st.sampled_from([None, None, {"x": 1.5}]),
    "unfinished": st.booleans(),
    "skip_last": st.booleans(),
    "outcome": st.sampled_from(["completed", "completed", "partial"]),
    "error": st.sampled_from([None, None, "late \u00e9"]),
})


# Offsets as the engine has them, and one beyond a C long long of microseconds.
@given(st.lists(runs, max_size=5), st.sampled_from([0.0, 1.7e9, 1234.5678, 9.3e12]))
def test_a_block_of_completed_runs_reads_back_as_their_records(
    specs: list[dict[str, Any]], offset: float
) -> None:
    wf = compile_workflows(loads_config(CONFIG))["wf"]
    finished = FinishedRuns()
    made = [_run(wf, i + 1, spec) for i, spec in enumerate(specs)]
    for run in made:
        finished.add(run, offset)
    expected = [completed_record(run, offset) for run in made]
    _same(finished.block(), _encode(expected))
    assert (finished.first_id, finished.last_id) == ((1, len(made)) if made else (0, 0))
    assert finished.count == len(made)
    if made:
        assert finished.finished_at == max(r[6] for r in expected) / 1e6


events = st.builds(
    DataReady,
    symbol=names,
    ts=st.floats(0, 4e9) | st.integers(0, 4 * 10**15).map(lambda v: v / 10**6),
    price=st.floats(1e-9, 1e12) | st.integers(1, 10**12).map(lambda v: v / 100),
    volume=reals.map(abs),
    bid=st.none() | st.floats(1e-9, 1e12),
    ask=st.none() | st.floats(1e-9, 1e12),
    priority=st.none() | priorities,
)


@given(st.lists(events, max_size=6), st.sampled_from([0.0, 1.7e9, 1e16]))
def test_a_journal_block_reads_back_as_its_records(
    accepted: list[DataReady], offset: float
) -> None:
    journal = JournalLog(41, lambda n: None)
    journal.offset = offset
    expected = []
    for i, event in enumerate(accepted):
        now = 100.0 + i / 1024
        assert journal.add("DATA_READY", event, now) == 42 + i
        expected.append((42 + i, int((now + offset) * 1e6 + 0.5), event))
    other = HighPriorityArrived(symbol="AAPL", priority=0)
    journal.add("HIGH_PRIORITY_ARRIVED", other, 200.0)
    expected.append((42 + len(accepted), int((200.0 + offset) * 1e6 + 0.5), other))
    count, first, last, _, _, block = journal.take()
    assert (count, first, last) == (len(expected), 42, 42 + len(accepted))
    _same(block, _encode(expected))
    assert journal.take()[5] == "[]"  # and it starts afresh


def test_an_event_that_cannot_be_journaled_leaves_the_journal_whole() -> None:
    """An event msgspec cannot encode either is refused when offered; the record it started
    is taken back, its seq is not used up, and the block stays valid JSON."""
    journal = JournalLog(0, lambda n: None)
    good = DataReady(symbol="AAPL", ts=1.0, price=2.0)
    assert journal.add("DATA_READY", good, 1.0) == 1
    bad = DataReady(symbol="AAPL", ts=1.0, price=2.0, bid=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Encoding objects of type object is unsupported"):
        journal.add("DATA_READY", bad, 2.0)
    assert journal.add("DATA_READY", good, 3.0) == 2
    count, first, last, _, _, block = journal.take()
    assert (count, first, last) == (2, 1, 2)
    assert [r[0] for r in _decode(block)] == [1, 2]
