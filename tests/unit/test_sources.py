"""Sources: the simulated market, file replay, and the pacing both share.

Every timing test runs on a fake timeline (injected ``sleep``/``monotonic``), so nothing here
really waits and nothing depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.events import DataReady, Event, HighPriorityArrived
from engine.intake import REJECT_REASONS, EventDecoder, RejectLog, encode_event
from engine.sources import (
    Pacer,
    ReplayFileError,
    ReplaySource,
    SimMarket,
    Source,
    SourceStats,
    default_symbol_names,
    detect_format,
)
from engine.sources.replay import _Line, _LineSplitter

DATA = Path(__file__).parent / "data"


class FakeTime:
    """A timeline that only moves when the code under test sleeps (plus a chosen overshoot)."""

    def __init__(self, start: float = 500.0, overshoot: float = 0.0) -> None:
        self.now = start
        self.start = start
        self.overshoot = overshoot
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        return self.now - self.start

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if delay > 0:
            self.now += delay + self.overshoot
        await asyncio.sleep(0)  # still a real suspension point, like the real sleep

    @property
    def waits(self) -> list[float]:
        return [d for d in self.sleeps if d > 0]


class Recorder:
    """A submit callback that keeps each event with the fake time it arrived at."""

    def __init__(self, time: FakeTime | None = None) -> None:
        self.time = time
        self.events: list[Event] = []
        self.times: list[float] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.time is not None:
            self.times.append(self.time.elapsed)


def run(source: Source, submit: Callable[[Event], Awaitable[None]]) -> None:
    asyncio.run(source.run(submit))


def no_rejections(stats: SourceStats) -> bool:
    return stats.rejected_total == 0


# --- SimMarket: the deterministic walk ----------------------------------------------------------


def walk(sim: SimMarket, n: int) -> list[tuple[str, float, float, float, float]]:
    return [(t.symbol, t.price, t.bid or 0.0, t.ask or 0.0, t.volume) for t in sim.ticks(n)]


def test_same_seed_gives_identical_ticks() -> None:
    a = SimMarket(symbols=8, seed=42)
    b = SimMarket(symbols=8, seed=42)
    first = list(a.ticks(500))
    assert first == list(b.ticks(500))
    assert first == list(a.ticks(500))  # every call starts the walk afresh
    assert list(a.ticks(10)) == first[:10]


def test_different_seed_gives_different_ticks() -> None:
    assert walk(SimMarket(seed=1), 50) != walk(SimMarket(seed=2), 50)


def test_ticks_are_well_formed_market_data() -> None:
    sim = SimMarket(symbols=6, tick_rate_hz=100.0, spread_bps=4.0, seed=3)
    decoder = EventDecoder()
    ticks = list(sim.ticks(2000, start_ts=1_700_000_000.0))
    assert {t.symbol for t in ticks} == set(sim.symbols)
    for i, tick in enumerate(ticks):
        assert tick.bid is not None
        assert tick.ask is not None
        assert 0 < tick.bid < tick.price < tick.ask
        assert math.isclose((tick.ask - tick.bid) / tick.price * 1e4, 4.0)
        assert tick.volume > 0
        assert tick.volume % 100 == 0
        assert tick.priority is None  # priorities come from symbol_priorities(), see SimMarket
        assert tick.ts == pytest.approx(1_700_000_000.0 + i * 0.01)
        assert decoder.decode(encode_event(tick)) == tick  # intake accepts everything it makes


def test_walk_is_log_normal_with_the_given_volatility() -> None:
    sim = SimMarket(symbols=1, volatility=0.01, seed=11)
    prices = [100.0] + [t.price for t in sim.ticks(20_000)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    assert statistics.stdev(returns) == pytest.approx(0.01, rel=0.05)
    assert abs(statistics.mean(returns)) < 0.001
    flat = SimMarket(symbols=3, volatility=0.0, start_price=42.0)
    assert {t.price for t in flat.ticks(100)} == {42.0}


def test_ticks_n_defaults_to_max_events() -> None:
    assert len(list(SimMarket(max_events=7).ticks())) == 7
    assert [t.ts for t in SimMarket(tick_rate_hz=0).ticks(3)] == [0.0, 0.001, 0.002]


def test_symbol_priorities_hot_first_then_cold() -> None:
    sim = SimMarket(symbols=6, hot_symbols=2, cold_priority=3)
    names = default_symbol_names(6)
    assert sim.symbols == tuple(names)
    assert sim.symbol_priorities() == {
        names[0]: 0, names[1]: 0, names[2]: 3, names[3]: 3, names[4]: 3, names[5]: 3,
    }  # fmt: skip
    sim.symbol_priorities()["X"] = 1  # a copy: the caller cannot change the market
    assert "X" not in sim.symbol_priorities()


def test_symbol_names_explicit_and_generated() -> None:
    assert SimMarket(symbols=["AAA", "BBB"], hot_symbols=5).symbol_priorities() == {
        "AAA": 0,
        "BBB": 0,
    }
    names = default_symbol_names(45)
    assert len(set(names)) == 45
    assert names[:3] == ["AAPL", "MSFT", "NVDA"]
    assert names[40:42] == ["SIM040", "SIM041"]
    assert all(1 <= len(n) <= 32 for n in names)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbols": 0}, "at least one symbol"),
        ({"symbols": ["A", "A"]}, "distinct"),
        ({"hot_symbols": -1}, "hot_symbols"),
        ({"cold_priority": -1}, "cold_priority"),
        ({"tick_rate_hz": -1.0}, "tick_rate_hz"),
        ({"tick_rate_hz": math.inf}, "tick_rate_hz"),
        ({"start_price": 0.0}, "start_price"),
        ({"volatility": math.nan}, "volatility"),
        ({"spread_bps": -0.1}, "spread_bps"),
        ({"max_events": -1}, "max_events"),
    ],
)
def test_sim_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimMarket(**kwargs)  # type: ignore[arg-type]


# --- SimMarket.run: pacing, yielding, backpressure ----------------------------------------------


def test_run_at_rate_zero_emits_the_walk_stamped_by_the_clock() -> None:
    sim = SimMarket(symbols=5, tick_rate_hz=0, max_events=600, seed=9, clock=lambda: 1234.5)
    recorder = Recorder()
    assert sim.statistics() == SourceStats("sim", "idle", 0)
    run(sim, recorder)
    emitted = [e for e in recorder.events if isinstance(e, DataReady)]
    assert len(emitted) == 600
    assert [(t.symbol, t.price, t.bid, t.ask, t.volume) for t in emitted] == [
        (t.symbol, t.price, t.bid, t.ask, t.volume) for t in sim.ticks(600)
    ]
    assert {t.ts for t in emitted} == {1234.5}
    stats = sim.statistics()
    assert (stats.name, stats.state, stats.emitted) == ("sim", "finished", 600)
    assert no_rejections(stats)


def test_run_at_rate_zero_still_lets_other_tasks_run() -> None:
    turns = 0
    seen: list[int] = []

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def submit(event: Event) -> None:  # never suspends: the worst case for fairness
        seen.append(turns)

    async def main() -> None:
        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        await SimMarket(tick_rate_hz=0, max_events=2000).run(submit)
        task.cancel()

    asyncio.run(main())
    assert len(seen) == 2000
    assert seen[-1] - seen[0] >= 2000 // 256 - 1  # the other task ran between batches


def test_pacing_on_an_exact_timer_releases_each_tick_on_time() -> None:
    time = FakeTime()
    sim = SimMarket(tick_rate_hz=50.0, max_events=101, sleep=time.sleep, monotonic=time.monotonic)
    recorder = Recorder(time)
    run(sim, recorder)
    assert recorder.times == pytest.approx([k / 50.0 for k in range(101)])
    assert time.elapsed == pytest.approx(2.0)


def test_pacing_does_not_drift_when_the_timer_oversleeps() -> None:
    # Every wake-up comes 4 ms late. Scheduling against the anchor releases what came due in
    # one batch; sleeping 1/rate per tick would have stretched 1 s of ticks to ~5 s.
    time = FakeTime(overshoot=0.004)
    sim = SimMarket(
        tick_rate_hz=1000.0, max_events=1000, sleep=time.sleep, monotonic=time.monotonic
    )
    recorder = Recorder(time)
    run(sim, recorder)
    assert len(recorder.times) == 1000
    for k, released in enumerate(recorder.times):
        due = k / 1000.0
        assert due - 1e-9 <= released <= due + 0.004 + 1e-9
    assert 0.999 <= time.elapsed <= 0.999 + 0.004 + 1e-9
    assert len(time.waits) <= 1000 // 4  # batches of ~5 ticks per wake-up, not a sleep per tick
    assert sim.lag_resets == 0


def test_pacing_skips_ahead_after_a_long_stall_instead_of_bursting() -> None:
    time = FakeTime()
    sim = SimMarket(tick_rate_hz=100.0, max_events=30, sleep=time.sleep, monotonic=time.monotonic)
    recorder = Recorder(time)

    async def stalling_submit(event: Event) -> None:
        await recorder(event)
        if len(recorder.events) == 10:
            time.now += 5.0  # the consumer held this tick for 5 s

    run(sim, stalling_submit)
    assert sim.lag_resets == 1
    after = recorder.times[10:]
    assert after[0] == pytest.approx(5.09)
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert gaps == pytest.approx([0.01] * len(gaps))  # back to the rate, no catch-up burst


def test_a_blocking_submit_stops_the_source() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        calls = 0

        async def submit(event: Event) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                await gate.wait()

        sim = SimMarket(tick_rate_hz=0, max_events=100)
        task = asyncio.create_task(sim.run(submit))
        for _ in range(50):
            await asyncio.sleep(0)  # hand the loop over; not waiting for a condition
        assert calls == 3  # nothing produced past the blocked submit, nothing buffered
        assert sim.statistics().emitted == 2
        gate.set()
        await task
        assert calls == 100
        assert sim.statistics().state == "finished"

    asyncio.run(main())


def test_cancel_and_failure_are_reported_in_the_state() -> None:
    async def main() -> None:
        sim = SimMarket(tick_rate_hz=0.001, max_events=10)  # the 2nd tick is due in 1000 s
        recorder = Recorder()
        task = asyncio.create_task(sim.run(recorder))
        await asyncio.sleep(0)
        assert sim.statistics().state == "running"
        with pytest.raises(RuntimeError, match="already running"):
            await sim.run(recorder)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sim.statistics().state == "cancelled"
        assert len(recorder.events) == 1

        async def broken(event: Event) -> None:
            raise ConnectionError("engine gone")

        with pytest.raises(ConnectionError):
            await sim.run(broken)
        assert sim.statistics().state == "failed"

    asyncio.run(main())


def test_sources_satisfy_the_protocol() -> None:
    assert isinstance(SimMarket(), Source)
    assert isinstance(ReplaySource(DATA / "replay_ticks.csv"), Source)


# --- Pacer --------------------------------------------------------------------------------------


def test_pacer_validates_its_guards() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Pacer(max_batch=0)
    with pytest.raises(ValueError, match="max_lag"):
        Pacer(max_lag=0)


def test_pacer_yields_once_per_batch_when_everything_is_due() -> None:
    time = FakeTime()

    async def main() -> None:
        pacer = Pacer(sleep=time.sleep, monotonic=time.monotonic, max_batch=10)
        for _ in range(35):
            await pacer.wait_until(0.0)

    asyncio.run(main())
    assert time.sleeps == [0, 0, 0]


# --- ReplaySource -------------------------------------------------------------------------------

CSV_EVENTS = [
    DataReady("AAPL", 1700000000.0, 189.5, 100.0, 189.49, 189.51),
    DataReady("MSFT", 1700000000.5, 370.1, 200.0, priority=1),
    DataReady("NVDA", 1700000002.5, 480.25, 300.0, 480.2, 480.3, 0),
    DataReady("META", 1700000004.0, 330.0),
    DataReady("AMZN", 1700000005.0, 145.0),
]

JSONL_EVENTS: list[Event] = [
    DataReady("AAPL", 1700000000.0, 189.5, 100.0),
    HighPriorityArrived("AAPL", 0),
    DataReady("MSFT", 1700000000.25, 370.1, bid=370.0, ask=370.2),
    DataReady("NVDA", 1700000001.0, 480.25, priority=1),
    DataReady("AMZN", 1700000002.0, 145.0),
]


def test_replay_csv_delivers_good_rows_and_counts_bad_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tickflow.intake")
    source = ReplaySource(DATA / "replay_ticks.csv", speed=0)
    recorder = Recorder()
    run(source, recorder)
    assert recorder.events == CSV_EVENTS
    stats = source.statistics()
    assert (stats.name, stats.state, stats.emitted) == ("replay:replay_ticks.csv", "finished", 5)
    assert set(stats.rejected) == set(REJECT_REASONS)
    assert {k: v for k, v in stats.rejected.items() if v} == {"bad_field": 4, "missing_field": 1}
    assert source.count_lines() == source.position == 11
    logged = [r.getMessage() for r in caplog.records if r.name == "tickflow.intake"]
    assert len(logged) == 5
    assert logged[0].startswith("rejected event from replay_ticks.csv:4: bad_field: Expected")
    assert "row has 8 cells, the header 7" in logged[4]


def test_replay_jsonl_delivers_good_lines_and_counts_bad_ones() -> None:
    source = ReplaySource(DATA / "replay_events.jsonl", speed=0)
    recorder = Recorder()
    run(source, recorder)
    assert recorder.events == JSONL_EVENTS
    rejected = {k: v for k, v in source.statistics().rejected.items() if v}
    assert rejected == {
        "malformed_json": 1,
        "not_object": 1,
        "unknown_type": 1,
        "missing_field": 1,
        "bad_field": 1,
    }
    assert source.count_lines() == source.position == 11  # the blank line is skipped, not counted


def test_replay_paces_by_ts_gaps_divided_by_speed() -> None:
    time = FakeTime()
    source = ReplaySource(
        DATA / "replay_ticks.csv", speed=2.0, sleep=time.sleep, monotonic=time.monotonic
    )
    recorder = Recorder(time)
    run(source, recorder)
    assert recorder.times == pytest.approx([0.0, 0.25, 1.25, 2.0, 2.5])


def test_replay_events_without_ts_follow_their_predecessor_and_late_ts_goes_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ticks.ndjson"
    path.write_text(
        '{"symbol":"A","ts":10,"price":1}\n'
        '{"symbol":"A","ts":12,"price":1}\n'
        '{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":0}\n'
        '{"symbol":"A","ts":11,"price":1}\n'
        '{"symbol":"A","ts":13,"price":1}'  # no newline at the end
    )
    time = FakeTime()
    source = ReplaySource(path, sleep=time.sleep, monotonic=time.monotonic)
    recorder = Recorder(time)
    run(source, recorder)
    assert recorder.times == pytest.approx([0.0, 2.0, 2.0, 2.0, 3.0])
    assert source.count_lines() == 5


def test_replay_rejects_oversized_and_invalid_utf8_lines(tmp_path: Path) -> None:
    good = b'{"symbol":"A","ts":1,"price":2}\n'
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        good
        + b'{"symbol":"' + b"A" * 300_000 + b'","ts":1,"price":2}\r\n'
        + b'{"symbol":"\xff\xfe","ts":1,"price":2}\n'
        + good.replace(b'"A"', b'"B"')
    )  # fmt: skip
    source = ReplaySource(path, speed=0, max_line_bytes=200)
    recorder = Recorder()
    run(source, recorder)
    assert [e.symbol for e in recorder.events] == ["A", "B"]
    rejected = {k: v for k, v in source.statistics().rejected.items() if v}
    assert rejected == {"oversized": 1, "invalid_utf8": 1}


def test_replay_csv_with_bom_type_column_and_odd_rows(tmp_path: Path) -> None:
    path = tmp_path / "odd.CSV"
    path.write_bytes(
        b"\xef\xbb\xbf Type ,Symbol,TS,Price,Note,Priority\r\n"
        b"HIGH_PRIORITY_ARRIVED,AAPL,,,re-rank,0\r\n"
        b",AAPL,5,1.5,fine,\r\n"
        b",AAPL,6,inf,,\r\n"
        b",AAPL,7,nan,,\r\n"
        b",AAPL,8,2.0,,high\r\n"
        b",AAPL,9,2\xff,,\r\n"
        b',"AAPL,10,3\r\n'
        b",AAPL,11,3.0,,\r\n"
    )
    source = ReplaySource(path, speed=0)
    assert source.format == "csv"
    recorder = Recorder()
    run(source, recorder)
    assert recorder.events == [
        HighPriorityArrived("AAPL", 0),
        DataReady("AAPL", 5.0, 1.5),
        DataReady("AAPL", 11.0, 3.0),
    ]
    rejected = {k: v for k, v in source.statistics().rejected.items() if v}
    assert rejected == {"bad_field": 3, "invalid_utf8": 1, "missing_field": 1}


def test_replay_rejections_are_logged_under_the_rate_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "noise.jsonl"
    path.write_text("nonsense\n" * 30 + '{"symbol":"A","ts":1,"price":2}\n')
    caplog.set_level(logging.WARNING, logger="tickflow.intake")
    clock = FakeTime()
    source = ReplaySource(path, speed=0, reject_log=RejectLog(limit=3, clock=clock.monotonic))
    recorder = Recorder()
    run(source, recorder)
    assert len(recorder.events) == 1
    assert source.statistics().rejected["malformed_json"] == 30
    logged = [r.getMessage() for r in caplog.records if r.name == "tickflow.intake"]
    assert len(logged) == 4
    assert logged[-1] == "suppressed 27 more 'malformed_json' rejections in the last 0.0 s"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"symbol,ts,volume\n", "lacks column.s. price"),
        (b"symbol,ts,price,price\n", "repeats column.s. price"),
        (b"\xff,ts,price\n", "not UTF-8"),
    ],
)
def test_replay_csv_header_problems_fail_the_file(
    tmp_path: Path, header: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(header + b"A,1,2\n")
    source = ReplaySource(path, speed=0)
    with pytest.raises(ReplayFileError, match=message):
        run(source, Recorder())
    assert source.statistics().state == "failed"


def test_replay_empty_files_finish_without_events(tmp_path: Path) -> None:
    for name in ("empty.csv", "empty.jsonl"):
        path = tmp_path / name
        path.write_bytes(b"")
        source = ReplaySource(path, speed=0)
        run(source, Recorder())
        assert source.statistics().state == "finished"
        assert source.count_lines() == 0


def test_replay_format_detection_and_override(tmp_path: Path) -> None:
    assert detect_format("a.csv") == "csv"
    assert detect_format(Path("x/y.NDJSON")) == "jsonl"
    assert detect_format("a.json") == "jsonl"
    with pytest.raises(ReplayFileError, match=r"'\.txt'"):
        detect_format("ticks.txt")
    with pytest.raises(ReplayFileError, match="no extension"):
        ReplaySource("ticks")
    path = tmp_path / "ticks.txt"
    path.write_bytes((DATA / "replay_events.jsonl").read_bytes())
    source = ReplaySource(path, speed=0, format="jsonl")
    recorder = Recorder()
    run(source, recorder)
    assert recorder.events == JSONL_EVENTS
    with pytest.raises(ValueError, match="format"):
        ReplaySource(path, format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(path, speed=-1)


def test_replay_respects_backpressure_and_cancellation() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        first = asyncio.Event()
        seen: list[Event] = []

        async def submit(event: Event) -> None:
            seen.append(event)
            first.set()
            await gate.wait()

        source = ReplaySource(DATA / "replay_events.jsonl", speed=0)
        task = asyncio.create_task(source.run(submit))
        await first.wait()
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(seen) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert source.statistics().state == "cancelled"
        assert source.statistics().emitted == 0

    asyncio.run(main())


# --- the streaming line splitter ----------------------------------------------------------------


def reference_lines(content: bytes, limit: int) -> list[_Line]:
    raw = content.split(b"\n")
    if raw[-1] == b"":
        raw.pop()  # a final newline ends the last line; it does not start another
    lines = []
    for number, line in enumerate(raw, start=1):
        data = line[:-1] if line.endswith(b"\r") else line
        lines.append(_Line(number, data if len(data) <= limit else None, len(data)))
    return lines


@given(
    st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"xyz" * 3]), max_size=40),
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=1, max_value=7),
)
def test_line_splitter_matches_a_whole_file_split(
    pieces: list[bytes], chunk: int, limit: int
) -> None:
    content = b"".join(pieces)
    splitter = _LineSplitter(limit)
    lines: list[_Line] = []
    for i in range(0, len(content), chunk):
        lines.extend(splitter.feed(content[i : i + chunk]))
    lines.extend(splitter.close())
    assert lines == reference_lines(content, limit)


def test_line_splitter_never_buffers_past_the_limit() -> None:
    splitter = _LineSplitter(10)
    for _ in range(1000):
        assert splitter.feed(b"z" * 1000) == []
        assert len(splitter._carry) <= 11
    assert splitter.feed(b"\nok\n") == [_Line(1, None, 1_000_000), _Line(2, b"ok", 2)]


class _Names:
    """A source of one DATA_READY per name, in order."""

    name = "names"

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.emitted = 0

    async def run(self, submit: Callable[[Event], Awaitable[object]]) -> None:
        for name in self.names:
            await submit(DataReady(symbol=name, ts=1.0, price=10.0))
            self.emitted += 1

    def statistics(self) -> SourceStats:
        return SourceStats(self.name, "finished", self.emitted)


def test_a_source_naming_a_symbol_past_the_cap_goes_on_with_the_rest() -> None:
    """The engine refuses an event for a new symbol once it tracks ``engine.max_symbols``: from
    a source, that event is counted and logged, and the source carries on -- it is not a
    reason to stop the daemon."""
    from engine.config import loads_config
    from engine.service.daemon import Engine

    config = loads_config(
        "[engine]\nmax_symbols = 2\n[metrics]\nenabled = false\n"
        "[workflows.w]\npriority = 2\nmax_concurrent = 2\n[[workflows.w.steps]]\nname = \"s\"\n"
        'action = "tests.unit.config_actions:async_step"\n'
    )
    source = _Names(["A", "B", "C", "A", "D", "B"])
    engine = Engine(config, sources=[source], persist=False)

    async def main() -> None:
        async with asyncio.timeout(10), engine.session():
            await engine.wait_sources()
            await engine.wait_idle()

    asyncio.run(main())
    assert source.emitted == 6
    assert sorted(s.name for s in engine.symbols) == ["A", "B"]
    counters = engine.statistics().counters
    assert counters.events_rejected["symbol_limit"] == 2
    assert counters.events_received == {"DATA_READY": 4}
