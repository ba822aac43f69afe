"""Storage cost, measured in one run: writer throughput, and the engine with storage on vs off.

``python -m benchmarks.bench_storage [--rounds N] [--runs N] [--records N]``

* **writer**: journal records (one per event, as intake makes them) plus a symbol change each,
  pushed as fast as the hot path can, committed by the group-commit writer task into a real
  SQLite file (WAL, synchronous=NORMAL): records/s committed, commits, mean records per commit.
* **engine**: the drain workload of :mod:`benchmarks.engine_load` (no-op 3-step runs, two
  workflows, every feature on) with storage off and on (a fresh SQLite file per round),
  alternating which goes first; runs/s medians and their ratio. Target: on >= 0.7x off.
  Each round's off and on run back to back, so the ratio within a round is what this
  shared VM's drift (up to 2x from one minute to the next) disturbs least: the median of the
  rounds' ratios is the figure to read, the ratio of the medians is printed beside it.
* **steady**: the engine benchmark's ``throughput`` scenario (the same runs, 512 in flight,
  saturation for ``--duration`` seconds) with storage off and on -- sustained: the time the
  writer needs afterwards to commit the window's changes counts -- and how many commits the
  writer completed while the engine was saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from benchmarks.engine_load import (
    Settings,
    TickflowSubject,
    engine_toml,
    mixed_events,
    throughput,
)
from engine.config import loads_config
from engine.core.events import Tick
from engine.core.symbols import SymbolTable
from engine.service.daemon import Engine
from engine.storage.db import open_database
from engine.storage.writer import StorageWriter
from strategies.broker import PaperBroker

OUT = Path(".benchmarks/storage.json")


async def writer_throughput(records: int, path: Path) -> dict[str, float]:
    conn = await open_database(path)
    writer = StorageWriter(conn, path=str(path), broker=PaperBroker(), wall=time.time, next_seq=1)
    symbols = SymbolTable()
    writer.watch(symbols)
    states = [symbols.register(f"S{i:04d}", 2) for i in range(1000)]
    task = asyncio.create_task(writer.run_forever())
    payload = b'{"type":"DATA_READY","symbol":"S0001","ts":1.0,"price":100.0}'
    started = time.perf_counter()
    for i in range(records):
        state = states[i % 1000]
        writer.journal("DATA_READY", state.name, payload, float(i))
        symbols.mark_data_ready(state, Tick(state.name, float(i), 100.0))
        if i % 512 == 511:
            await writer.wait_capacity()
            await asyncio.sleep(0)  # the hot path yields like intake does between batches
    await writer.wait_committed(records)
    elapsed = time.perf_counter() - started
    stats = writer.statistics()
    writer.request_stop()
    await task
    await writer.close()
    return {
        "records_per_s": stats.records / elapsed,
        "events_per_s": records / elapsed,
        "commits": stats.commits,
        "records_per_commit": stats.records / max(stats.commits, 1),
    }


async def drain(batch: int, db: Path | None) -> float:
    toml = engine_toml()
    if db is not None:
        toml += f'\n[storage]\npath = "{db}"\n'
    engine = Engine(loads_config(toml), sources=[], persist=db is not None)
    events = mixed_events(batch)
    async with engine.session():
        # Steady state: from the first event until every run is done and, with storage on,
        # committed (the durability point); opening the file and recovery are not in it.
        started = time.perf_counter()
        for event in events:
            engine.submit_nowait(event)
        async with asyncio.timeout(120):
            await engine.wait_idle()
            writer = engine.persistence.writer if engine.persistence else None
            if writer is not None:
                await writer.flush()
        elapsed = time.perf_counter() - started
    runs = sum(v["completed"] for v in engine.statistics().counters.runs.values())
    assert runs == batch, runs
    return batch / elapsed


class _StoredSubject(TickflowSubject):
    """The engine benchmark's tickflow subject, with storage on when ``db`` is given."""

    def __init__(self, db: Path | None) -> None:
        storage = f'\n[storage]\npath = "{db}"\n' if db is not None else ""
        super().__init__(engine_toml() + storage)
        self.db = db

    async def __aenter__(self) -> _StoredSubject:
        self.engine = Engine(self.config, sources=[], persist=self.db is not None)
        self._session = self.engine.session()
        await self._session.__aenter__()
        self.submit = self.engine.submit_nowait
        return self


async def steady(db: Path | None, duration_s: float) -> tuple[float, int]:
    """Sustained runs/s at saturation, and the commits made while saturated (0: storage off).

    The scenario submits without waiting for the writer, so by the end of the window the writer
    may be far behind; the runs of the window only count once what they changed is committed.
    Rate = runs completed in the window / (window + the time the writer then needs to commit
    everything), which is what the engine sustains with the writer keeping up.
    """
    subject = _StoredSubject(db)
    async with subject:
        settings = Settings(duration_s=duration_s)
        result = await throughput(subject, settings)
        persistence = subject._engine().persistence
        commits, catch_up = 0, 0.0
        if persistence is not None and persistence.writer is not None:
            commits = persistence.writer.commits
            started = time.perf_counter()
            await persistence.writer.flush()
            catch_up = time.perf_counter() - started
    window = settings.duration_s
    return float(result["runs_per_s"]) * window / (window + catch_up), commits


def run(rounds: int, runs: int, records: int, duration_s: float = 1.0) -> dict[str, Any]:
    off: list[float] = []
    on: list[float] = []
    writer: list[dict[str, float]] = []
    steady_off: list[float] = []
    steady_on: list[float] = []
    steady_commits: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                writer.append(runner.run(writer_throughput(records, Path(tmp) / f"w{r}.db")))
            order = [None, Path(tmp) / f"e{r}.db"]
            if r % 2:
                order.reverse()
            for db in order:
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    rate = runner.run(drain(runs, db))
                (off if db is None else on).append(rate)
            for db in order:
                db = db and db.with_name(f"s{r}.db")
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    rate, commits = runner.run(steady(db, duration_s))
                if db is None:
                    steady_off.append(rate)
                else:
                    steady_on.append(rate)
                    steady_commits.append(commits)
    result = {
        "writer": {k: statistics.median(w[k] for w in writer) for k in writer[0]},
        "engine_runs_per_s": {"storage_off": statistics.median(off),
                              "storage_on": statistics.median(on)},
        "ratio_on_vs_off": statistics.median(on) / statistics.median(off),
        "steady_runs_per_s": {"storage_off": statistics.median(steady_off),
                              "storage_on": statistics.median(steady_on),
                              "commits_while_saturated": statistics.median(steady_commits)},
        "steady_ratio_on_vs_off": statistics.median(steady_on) / statistics.median(steady_off),
        "paired_ratios": {"drain": _paired(on, off), "steady": _paired(steady_on, steady_off)},
        "rounds_runs_per_s": {"drain": {"off": off, "on": on},
                              "steady": {"off": steady_off, "on": steady_on}},
        "rounds": rounds,
        "runs_per_round": runs,
    }
    return result


def _paired(on: list[float], off: list[float]) -> dict[str, float]:
    """The median, lowest and highest of the rounds' on/off ratios."""
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=1.0, help="steady window, seconds")
    args = parser.parse_args(argv)
    result = run(args.rounds, args.runs, args.records, args.duration)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    w, e = result["writer"], result["engine_runs_per_s"]
    print(f"writer: {w['records_per_s']:,.0f} records/s committed, "
          f"{w['records_per_commit']:.0f} records per commit ({w['commits']:.0f} commits)")
    pairs = result["paired_ratios"]
    print(f"engine: {e['storage_off']:,.0f} runs/s storage off, {e['storage_on']:,.0f} runs/s "
          f"storage on: {_ratios(pairs['drain'], result['ratio_on_vs_off'])}")
    st = result["steady_runs_per_s"]
    print(f"steady: {st['storage_off']:,.0f} runs/s storage off, {st['storage_on']:,.0f} runs/s "
          f"storage on: {_ratios(pairs['steady'], result['steady_ratio_on_vs_off'])}; "
          f"{st['commits_while_saturated']:.0f} commits while saturated")
    return 0


def _ratios(paired: dict[str, float], of_medians: float) -> str:
    return (f"{paired['median']:.2f}x median of rounds (target >= 0.70x; rounds "
            f"{paired['min']:.2f}-{paired['max']:.2f}x; ratio of medians {of_medians:.2f}x)")


if __name__ == "__main__":
    raise SystemExit(main())
