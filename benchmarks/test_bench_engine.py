"""Drain throughput: tickflow against the baseline pool, per 3-step run, in one pytest run.

Each benchmark call starts a design in a fresh uvloop loop, submits ``BATCH`` ``DATA_READY``
events for distinct symbols (one in five priority 0, as in the load benchmark; no-op steps),
waits until every run has completed and stops the design, so the figure per run is
``mean / BATCH`` including start-up and shutdown (a few milliseconds, the same for all). The
end-to-end latency scenarios (paced, flood, preemption) are a load run, not a micro-benchmark:
``python -m benchmarks.engine_load`` runs them, with the same designs and workloads.

Run: ``pytest benchmarks/test_bench_engine.py --benchmark-json=.benchmarks/engine-drain.json``,
then ``python -m benchmarks.engine_report .benchmarks/engine-drain.json`` prints the per-run
times and the ratios against the baseline from that same run. Do not pass
``--benchmark-disable-gc`` here (the heap benchmarks do): the cyclic collector's work is part of
what a design costs, and it is not the same for both.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.engine_load import DESIGNS, run_drain

BATCH = 10_000


@pytest.mark.parametrize("impl", DESIGNS)
def test_drain(benchmark: Any, impl: str) -> None:
    benchmark.group = f"drain {BATCH} no-op 3-step runs"
    benchmark.extra_info["batch"] = BATCH
    done = benchmark.pedantic(run_drain, args=(impl, BATCH), rounds=5, iterations=1,
                              warmup_rounds=1)
    assert done == BATCH  # every run completed: the figure is for finished work
