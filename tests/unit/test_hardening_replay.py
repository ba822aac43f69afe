"""Replay's messages and progress (issue 18, item 12): an unknown extension names the CLI option,
and a paced replay over a gap in the recording neither claims 100 % nor waits silently.
Virtual time (tests/unit/test_sources.FakeTime): the gap costs no real time."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest

from engine.core.events import Event
from engine.sources import ReplaySource
from engine.sources.replay import GAP_NOTICE_S, ReplayFileError
from tests.unit.test_sources import FakeTime


def test_an_unknown_extension_names_the_format_option(tmp_path: Path) -> None:
    path = tmp_path / "ticks.txt"
    path.write_text("")
    with pytest.raises(ReplayFileError) as info:
        ReplaySource(path)
    assert "--format csv" in str(info.value)
    assert "format='csv'" not in str(info.value)


def test_progress_over_a_gap_in_the_recording_is_not_100_percent_and_the_wait_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ticks.jsonl"
    gap = 3600.0
    stamps = [0.0, 1.0, 2.0, 2.0 + gap]
    path.write_bytes(b"".join(
        orjson.dumps({"symbol": "AAPL", "ts": 1_700_000_000 + t, "price": 1.0}) + b"\n"
        for t in stamps
    ))
    time = FakeTime()
    seen: list[tuple[float, int]] = []  # (virtual delay, position while sleeping)
    source = ReplaySource(path, speed=1.0, monotonic=time.monotonic, sleep=time.sleep)

    async def sleep(delay: float) -> None:
        seen.append((delay, source.position))
        await time.sleep(delay)

    source._sleep = sleep  # the pacer is built at run() from this
    submitted: list[Event] = []

    async def submit(event: Event) -> None:
        submitted.append(event)

    total = source.count_lines()
    with caplog.at_level(logging.INFO, logger="tickflow.replay"):
        asyncio.run(source.run(submit))
    assert len(submitted) == total == 4
    long_waits = [(delay, position) for delay, position in seen if delay > GAP_NOTICE_S]
    assert long_waits, seen
    for _, position in long_waits:
        assert position < total  # the held tick is not done yet
    assert source.position == total
    notices = [r for r in caplog.records if "gap in the recording" in r.getMessage()]
    assert len(notices) == 1
