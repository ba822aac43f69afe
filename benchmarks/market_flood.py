"""Market-data flood: 2,000 symbols ticking at 5x what either design can process.

``python -m benchmarks.market_flood [--duration 20] [--rounds 1]`` -- a round first measures
each design's saturation on this very workload (decisions/s with 512 runs in flight, symbols
taken in turn so nothing conflates), then offers both designs the same seeded tick stream at
``--factor`` (5) times the higher of the two saturation rates for ``--duration`` seconds.
Every run of either design is a fresh subprocess (``... market_flood child``), so the peak RSS
reported (``VmHWM``) is that design's own and no heap left over from the other one counts.

The workload, identical in both designs: one workflow of two steps per tick.

* ``features`` (:func:`features`) suspends once, as a step reading a cache or a socket would,
  then updates a fast and a slow EMA of the symbol's price. Besides being what real steps do,
  the suspension keeps the comparison about queueing: a baseline worker whose steps never
  suspend keeps the event loop until its queue is empty, so it would never queue anything and
  would lose its surplus at the feed instead (a different failure, not this scenario's).
* ``decide`` (:func:`decide`) turns the EMA spread into BUY/SELL/HOLD and records the
  **staleness** of the decision: the clock when this last step runs minus the ``ts`` of the tick
  the run acted on (its arrival time at the feed, on ``perf_counter``).

The market side is a UDP-style feed (:class:`Feed`): ticks arrive into a socket buffer of
16,384 ticks (2 MiB) and what arrives while it is full is dropped; every loop turn the feed
handler reads at most 512 ticks (one 64 KiB read) and submits each to the design, stamped with
its arrival time. The reader is the same code for both designs; a design that keeps the loop
longer per turn reads fewer ticks and drops more.

Tickflow conflates: a tick for a symbol whose run has not started replaces that run's input, so
its decisions act on recent ticks and its run table stays at most two runs per symbol. The
baseline queues a job per tick, so under overload its queue grows every second, and each
decision acts on a tick as old as the queue is long. Reported per design: staleness p50/p99
(and the histogram, for a CDF), decisions/s, peak RSS, ticks taken in and the share dropped at
the feed, ticks conflated (tickflow) and the work left queued at the end (runs in the table /
jobs in the queue).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from engine.core.events import DataReady

from .engine_load import Settings, Subject, hist_from_record, hist_record, run_scenario
from .market_workload import (
    BOOKS,
    DESIGNS,
    PRIORITY,
    READ_BATCH,
    SOCKET_TICKS,
    SYMBOLS,
    Feed,
    TickStream,
    make_subject,
    queued,
)

__all__ = [
    "DESIGNS",
    "FloodSettings",
    "flood",
    "main",
    "make_subject",
    "run",
    "saturation",
    "summarize",
]

DEFAULT_JSON = Path(".benchmarks/market_flood.json")
CHILD_TIMEOUT_S = 180.0  # beyond the run's own length: start-up, and a baseline's teardown


# -- the scenarios (registered in benchmarks.engine_load.SCENARIOS) -------------------------


def _rss_kib(field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in KiB, from /proc (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def saturation(subject: Subject, s: Settings) -> dict[str, Any]:
    """Decisions/s with ``s.in_flight`` runs in flight; symbols in turn, so none conflates."""
    names = TickStream(s.seed, length=1).names
    submit, in_flight, cap = subject.submit, subject.in_flight, s.in_flight
    clock = time.perf_counter
    opens = clock() + s.warmup_s
    start = end = 0.0
    done0 = i = 0
    while True:
        now = clock()
        if start == 0.0 and now >= opens:
            subject.reset_statistics()
            start, end, done0 = now, now + s.duration_s, subject.completed()
        elif start and now >= end:
            break
        for _ in range(cap - in_flight()):
            submit(DataReady(symbol=names[i % SYMBOLS], ts=now, price=100.0, volume=1.0,
                             priority=PRIORITY))
            i += 1
        await asyncio.sleep(0)
    return {"decisions_per_s": (subject.completed() - done0) / (clock() - start),
            **subject.extras()}


async def flood(subject: Subject, s: Settings, rate: float) -> dict[str, Any]:
    """Ticks arrive at ``rate`` per second (a :class:`Feed`) for the warm-up and the window;
    each loop turn the feed handler reads at most :data:`READ_BATCH` of them, as one socket
    read does, and submits every one. A tick's ``ts`` is its arrival time, so staleness counts
    its wait in the socket buffer too: the reader is the same for both designs, and a design
    that leaves it too little of the loop loses ticks at the feed."""
    if not rate > 0:
        raise ValueError(f"the flood needs a rate > 0 ticks/s, got {rate}")
    stream = TickStream(s.seed)
    names, index, price, mask = stream.names, stream.index, stream.price, len(stream) - 1
    submit = subject.submit
    clock = time.perf_counter
    rss_start = _rss_kib("VmRSS")
    start = clock()
    feed = Feed(rate, start, SOCKET_TICKS, READ_BATCH)
    opens = start + s.warmup_s
    gap = 1.0 / rate
    window_start = end = 0.0
    done0 = 0
    feed0: tuple[int, int, int] = (0, 0, 0)
    extras0: dict[str, int] = {}
    while True:
        now = clock()
        if window_start == 0.0 and now >= opens:
            subject.reset_statistics()
            BOOKS.reset()
            window_start, end = now, now + s.duration_s
            feed0 = (feed.arrived, feed.taken, feed.dropped)
            done0, extras0 = subject.completed(), subject.extras()
        elif window_start and now >= end:
            break
        for span in feed.read(now):
            for seq in span:
                i = seq & mask
                submit(DataReady(symbol=names[index[i]], ts=start + seq * gap, price=price[i],
                                 volume=1.0, priority=PRIORITY))
        await asyncio.sleep(0)
    elapsed = clock() - window_start
    extras = {k: v - extras0.get(k, 0) for k, v in subject.extras().items()}
    arrived, taken, dropped = (feed.arrived - feed0[0], feed.taken - feed0[1],
                               feed.dropped - feed0[2])
    return {
        "offered_per_s": rate,
        "arrived_per_s": arrived / elapsed,
        "taken_per_s": taken / elapsed,
        "dropped_at_feed": dropped,
        "dropped_share": dropped / arrived if arrived else 0.0,
        "decisions_per_s": (subject.completed() - done0) / elapsed,
        "staleness": hist_record(BOOKS.staleness),
        "actions": {"buy": BOOKS.decisions[0], "sell": BOOKS.decisions[1],
                    "hold": BOOKS.decisions[2]},
        "queued_at_end": queued(subject),
        "rss_start_mib": rss_start / 1024,
        **extras,
    }


# -- one run per subprocess, and the whole benchmark ----------------------------------------


@dataclass
class FloodSettings:
    duration_s: float = 20.0
    warmup_s: float = 0.5
    saturation_s: float = 1.0
    factor: float = 5.0
    rounds: int = 1
    seed: int = 1
    in_flight: int = 512

    def check(self) -> None:
        """Refuse sizes that cannot give a measurement, naming the knob."""
        for name in ("duration_s", "saturation_s", "factor"):
            value = getattr(self, name)
            if not (value > 0 and value != float("inf")):
                raise ValueError(f"market flood: {name} must be a finite number > 0, got {value}")
        if not 0 <= self.warmup_s < float("inf"):
            raise ValueError(f"market flood: warmup_s must be finite and >= 0, "
                             f"got {self.warmup_s}")
        if self.rounds < 1 or self.in_flight < 1:
            raise ValueError("market flood: rounds and in_flight must be >= 1")


def child(design: str, scenario: str, s: Settings, rate: float) -> dict[str, Any]:
    """One run in this (fresh) process; adds the process's peak RSS."""
    args = (rate,) if scenario == "market_flood" else ()
    result = run_scenario(scenario, design, s, *args)
    result["peak_rss_mib"] = _rss_kib("VmHWM") / 1024
    return result


def _spawn(design: str, scenario: str, s: FloodSettings, rate: float,
           duration_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.market_flood", "child", "--design", design,
           "--scenario", scenario, "--rate", repr(rate), "--duration", repr(duration_s),
           "--warmup", repr(s.warmup_s), "--seed", str(s.seed), "--in-flight", str(s.in_flight)]
    try:
        # From the checkout this module is in, so the child imports the same benchmarks and
        # engine whatever the caller's working directory.
        proc = subprocess.run(cmd, capture_output=True, timeout=duration_s + CHILD_TIMEOUT_S,
                              check=False, cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"market flood: the {design} {scenario} run did not finish within "
                           f"{exc.timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"market flood: the {design} {scenario} run failed "
                           f"(exit {proc.returncode}): {proc.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(proc.stdout)
    return result


def run(s: FloodSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``s.rounds`` rounds of: both saturations, then both floods at ``factor`` x the higher."""
    s.check()
    started = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    for r in range(s.rounds):
        order = list(DESIGNS) if r % 2 == 0 else list(reversed(DESIGNS))
        sat = {}
        for design in order:
            sat[design] = _spawn(design, "market_saturation", s, 0.0, s.saturation_s)
            log(f"  round {r + 1}  market saturation {design:<9}"
                f"{sat[design]['decisions_per_s']:>10,.0f} decisions/s")
        rate = s.factor * max(x["decisions_per_s"] for x in sat.values())
        runs = {}
        for design in order:
            runs[design] = _spawn(design, "market_flood", s, rate, s.duration_s)
            x = runs[design]
            log(f"  round {r + 1}  market flood {design:<9} at {rate:,.0f} ticks/s: "
                f"{x['decisions_per_s']:,.0f} decisions/s, staleness p50 "
                f"{x['staleness']['p50_us'] / 1e3:,.1f} ms, peak RSS {x['peak_rss_mib']:.0f} MiB")
        rounds.append({"rate": rate, "saturation": sat, "flood": runs})
    return {
        "meta": {"settings": asdict(s), "symbols": SYMBOLS,
                 "wall_s": time.perf_counter() - started},
        "summary": summarize(rounds),
        "rounds": rounds,
    }


def summarize(rounds: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per design: medians of the rounds' rates, peak RSS the highest, staleness pooled."""
    out: dict[str, dict[str, Any]] = {}
    for design in DESIGNS:
        runs = [r["flood"][design] for r in rounds]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(x[key] for x in runs))

        out[design] = {
            "saturation_per_s": float(statistics.median(
                r["saturation"][design]["decisions_per_s"] for r in rounds)),
            "offered_per_s": med("offered_per_s"),
            "taken_per_s": med("taken_per_s"),
            "dropped_share": med("dropped_share"),
            "decisions_per_s": med("decisions_per_s"),
            "staleness": hist_record(hist_from_record([x["staleness"] for x in runs])),
            "peak_rss_mib": max(x["peak_rss_mib"] for x in runs),
            "rss_start_mib": med("rss_start_mib"),
            "conflated": med("conflated"),
            "queued_at_end": med("queued_at_end"),
            "cpu_share": med("cpu_share"),
        }
    return out


def format_table(data: dict[str, Any]) -> str:
    summary = data["summary"]
    rows = [
        ("saturation (decisions/s)", "saturation_per_s", "{:,.0f}"),
        ("ticks offered/s", "offered_per_s", "{:,.0f}"),
        ("ticks taken in/s", "taken_per_s", "{:,.0f}"),
        ("share dropped at the feed", "dropped_share", "{:.1%}"),
        ("decisions/s", "decisions_per_s", "{:,.0f}"),
        ("staleness p50 (ms)", ("staleness", "p50_us"), "{:,.2f}"),
        ("staleness p99 (ms)", ("staleness", "p99_us"), "{:,.2f}"),
        ("peak RSS (MiB)", "peak_rss_mib", "{:,.0f}"),
        ("ticks conflated", "conflated", "{:,.0f}"),
        ("queued at end", "queued_at_end", "{:,.0f}"),
    ]
    lines = [f"{'market flood':<26}" + "".join(f"{d:>16}" for d in DESIGNS), "-" * 58]
    for label, key, fmt in rows:
        cells = []
        for d in DESIGNS:
            if isinstance(key, tuple):
                value = summary[d][key[0]][key[1]] / 1e3
            else:
                value = summary[d][key]
            cells.append(fmt.format(value))
        lines.append(f"{label:<26}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.market_flood child")
    parser.add_argument("--design", choices=DESIGNS, required=True)
    parser.add_argument("--scenario", choices=("market_saturation", "market_flood"),
                        required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=_positive, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--in-flight", type=int, required=True)
    a = parser.parse_args(argv)
    s = Settings(duration_s=a.duration, warmup_s=a.warmup, seed=a.seed, in_flight=a.in_flight)
    result = child(a.design, a.scenario, s, a.rate)
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    sys.stdout.flush()
    # The baseline may hold millions of queued jobs: freeing them one by one at exit is
    # seconds of teardown that measures nothing.
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["child"]:
        return _child_main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.market_flood",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FloodSettings()
    parser.add_argument("--duration", type=_positive, default=d.duration_s,
                        help="seconds of flood per design (default %(default)s)")
    parser.add_argument("--saturation", type=_positive, default=d.saturation_s,
                        help="seconds of the saturation measurement (default %(default)s)")
    parser.add_argument("--factor", type=_positive, default=d.factor,
                        help="offered rate / the higher saturation (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=d.rounds, choices=range(1, 101),
                        metavar="N", help="rounds, designs alternating (default %(default)s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help="where to write the results (default %(default)s)")
    a = parser.parse_args(args)
    s = FloodSettings(duration_s=a.duration, saturation_s=a.saturation, factor=a.factor,
                      rounds=a.rounds)
    data = run(s, log=lambda line: print(line, file=sys.stderr, flush=True))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print(format_table(data))
    print(f"\nwritten to {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
