"""ReplaySource.iter_events (the backtest's reader) against the strict async path: the same
events, the same rejects by reason, for plain files and every kind of awkward row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.core.events import DataReady, Event
from engine.sources import ReplaySource
from engine.sources.fastcsv import plain_block_decoder, plain_row_decoder

HEADER = "symbol,ts,price,volume,bid,ask,priority"

AWKWARD = [
    "AAA,1700000000.0,100.0,5,99.9,100.1,0",
    '"BBB",1700000000.1,50.0,1,,,1',  # quoted symbol: strict path, accepted
    "AAA,1700000000.2,abc,1,,,",  # bad price: bad_field
    "CCC,1700000000.3,20.0,1,,,",
    "DDD,1700000000.4,,1,,,",  # missing price: missing_field
    "",  # blank: skipped, not an event
    "EEE,1700000000.5,nan,1,,,",  # non-finite: bad_field
    "FFF,1700000000.6,10.0,1,10.2,10.1,",  # bid above ask: bad_field
    "GGG,1700000000.7,10.0,-1,,,",  # negative volume: bad_field
    " HHH ,1700000000.8,10.0,1,,,2",  # padded symbol: strict path strips it
    "III,1700000000.9,10.0,1,,,1.5",  # fractional priority: bad_field
    "JJJ,1700000001.0,10.0,1,,,,extra",  # more cells than the header
    "KKK,1700000001.1,10.0",  # fewer cells: absent optional columns
    "X" * 300 + ",1700000001.2,10.0,1,,,",  # symbol too long
    "LLL,1700000001.3,1e3,1_000,,,",  # Python-style numbers, accepted by both paths
    "MMM,1700000001.4,10.0,1,,,-3",  # negative priority: bad_field
    "NNN,1700000001.5," + "9" * 200 + ",1,,,",  # over the line limit when it is small
]


def _strict(path: Path, **kwargs: object) -> tuple[list[Event], dict[str, int]]:
    source = ReplaySource(path, speed=0, **kwargs)  # type: ignore[arg-type]
    out: list[Event] = []

    async def submit(event: Event) -> None:
        out.append(event)

    asyncio.run(source.run(submit))
    return out, {k: v for k, v in source.statistics().rejected.items() if v}


def _sync(path: Path, **kwargs: object) -> tuple[list[Event], dict[str, int], int]:
    source = ReplaySource(path, speed=0, **kwargs)  # type: ignore[arg-type]
    events = list(source.iter_events())
    stats = source.statistics()
    assert stats.emitted == len(events)
    return events, {k: v for k, v in stats.rejected.items() if v}, source.position


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("limit", [65536, 120])
def test_awkward_rows_match_the_strict_path(tmp_path: Path, newline: str, limit: int) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(newline.join([HEADER, *AWKWARD]) + newline)
    strict, strict_rejects = _strict(path, max_line_bytes=limit)
    events, rejects, position = _sync(path, max_line_bytes=limit)
    assert events == strict
    assert rejects == strict_rejects
    assert position == len(AWKWARD)
    assert "bad_field" in rejects
    assert "missing_field" in rejects
    assert any(isinstance(e, DataReady) and e.symbol == "HHH" for e in events)


def test_plain_blocks_match_row_by_row(tmp_path: Path) -> None:
    # Enough rows for several 1 MiB blocks, ending without a newline.
    rows = [
        f"S{i % 7},{1_700_000_000 + i / 1000:.6f},{100 + i % 13:.2f},{i % 5},"
        + ("" if i % 3 else f"{99 + i % 13:.2f},{101 + i % 13:.2f}") + ("," if i % 3 else "")
        + f",{i % 4 if i % 2 else ''}"
        for i in range(60_000)
    ]
    path = tmp_path / "plain.csv"
    path.write_text("\n".join([HEADER, *rows]))
    strict, strict_rejects = _strict(path)
    events, rejects, position = _sync(path)
    assert strict_rejects == rejects == {}
    assert events == strict
    assert len(events) == position == 60_000


def test_a_bad_row_in_a_block_loses_nothing_around_it(tmp_path: Path) -> None:
    rows = [f"S{i % 3},{1_700_000_000 + i:.1f},{10 + i % 9:.1f},1,,," for i in range(40_000)]
    rows[30_000] = "S1,1700000000.0,-5,1,,,"  # negative price deep inside a block
    path = tmp_path / "one_bad.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    events, rejects, _ = _sync(path)
    assert rejects == {"bad_field": 1}
    assert len(events) == 39_999
    assert events == _strict(path)[0]


def test_jsonl_iter_events_matches(tmp_path: Path) -> None:
    path = tmp_path / "ticks.jsonl"
    path.write_text(
        '{"symbol":"A","ts":1.0,"price":2.0}\n'
        '{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":0}\n'
        "garbage\n"
        '{"symbol":"B","ts":2.0,"price":0}\n'
    )
    strict, strict_rejects = _strict(path)
    events, rejects, _ = _sync(path)
    assert events == strict
    assert len(events) == 2
    assert rejects == strict_rejects == {"malformed_json": 1, "bad_field": 1}


def test_decoders_refuse_what_they_are_unsure_of() -> None:
    columns = tuple(enumerate(HEADER.split(",")))
    row = plain_row_decoder(columns, 7)
    block = plain_block_decoder(columns, 7)
    good = b"AAA,1.0,2.0,3,1.9,2.1,0"
    assert row(good) == DataReady("AAA", 1.0, 2.0, 3.0, 1.9, 2.1, 0)
    assert block([good, good]) == [DataReady("AAA", 1.0, 2.0, 3.0, 1.9, 2.1, 0)] * 2
    for bad in (b'"A",1,2,,,,', b"A,1,inf,,,,", b"A,1,2,,3,2,", b"A\tB,1,2,,,,", b"A,-1,2,,,,"):
        assert row(bad) is None
        assert block([good, bad]) is None
