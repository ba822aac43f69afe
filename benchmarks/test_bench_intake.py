"""Network intake under load, as a pytest-benchmark entry (a thin wrapper).

The figures that matter (events/s acknowledged, ack latency p50/p99, storage off and on) come
from ``python -m benchmarks.intake_load``; this runs one small round of each storage mode so the
intake shows up in ``--benchmark-json`` output next to the other benchmarks.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.intake_load import run_scenario

EVENTS = 20_000


@pytest.mark.parametrize("storage", [False, True], ids=["storage-off", "storage-on"])
def test_intake_load(benchmark: Any, storage: bool) -> None:
    benchmark.group = f"intake: {EVENTS} DATA_READY lines over loopback TCP, acks read back"
    result = benchmark.pedantic(
        run_scenario, args=(storage,),
        kwargs={"events": EVENTS, "conns": 4, "window": 512, "chunk": 32, "duration": 20.0},
        rounds=1, iterations=1,
    )
    benchmark.extra_info.update(result)
    assert result["acked"] == EVENTS
    assert result["errors"] == 0
