"""Paired rounds of push+pop: the compiled heap against ``heapq`` with tuples, in one process.

``python -m benchmarks.heap_ratio --rounds 5`` -- for each size (1e3, 1e5, 1e6 by default) both
sides are filled with the same keys and then fed the same stream of operations, each one a
push of a random ``(priority 0-7, deadline)`` key followed by a pop, so both hold the same
multiset of keys at a steady size n throughout. A round times one batch on each side,
back to back, and the side that goes first alternates from round to round, so a noisy
neighbour or a frequency change shifts both figures of a round alike; the ratio of each round
is ``heapq time / heap time`` and the figure to quote is the median of the rounds.

The baseline is what a heapq user writes inline: ``heappush(h, (priority, deadline, seq,
item)); heappop(h)``, with the sequence counter kept in a local. ``--wrapped`` measures instead
the baseline class of ``benchmarks/test_bench_heap.py`` (a method call per operation), whose
ratios are the ones earlier README figures quoted. The garbage collector is off while a batch
is timed, on both sides (``make bench-heap`` runs with ``--benchmark-disable-gc`` likewise).

Two agents' worth of other work share this machine's two cores, so a round is not one long
batch per side: it is cut into chunks of ``--chunk`` operations that alternate between the
sides (which one goes first alternates too), and the time is this thread's CPU time
(``--clock wall`` for elapsed time instead). A preemption then costs neither side anything,
and a slow spell lands on both halves of the same round.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import importlib
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.test_bench_heap import PRIORITIES, HeapqBaseline

DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
DEFAULT_BATCH = 50_000
DEFAULT_CHUNK = 2_000
CLOCKS = {"cpu": time.thread_time_ns, "wall": time.perf_counter_ns}

Keys = list[tuple[int, float]]
Clock = Callable[[], int]


KEY_KINDS = ("random", "fifo", "clock")


def make_keys(n: int, seed: int, kind: str = "random", start: int = 0) -> Keys:
    """``n`` keys of the ``kind``-th workload; ``start`` counts the keys made before (clock).

    random: priority 0-7 and a deadline uniform in [0, 1) -- ties are practically absent.
    fifo: priority 0-7 and deadline 0.0 -- every pair of one priority ties on (priority,
    deadline), so every such comparison is decided by the sequence: the compiled heap's slow path.
    clock: priority 0-7 and a deadline that grows 10 us per key with up to 1 ms of jitter, as
    an engine's ``trigger time + budget`` does.
    """
    rng = random.Random(seed)
    if kind == "fifo":
        return [(rng.randrange(PRIORITIES), 0.0) for _ in range(n)]
    if kind == "clock":
        return [
            (rng.randrange(PRIORITIES), (start + i) * 1e-5 + rng.random() * 1e-3)
            for i in range(n)
        ]
    return [(rng.randrange(PRIORITIES), rng.random()) for _ in range(n)]


class InlineHeapq:
    """``heapq`` on a list of ``(priority, deadline, seq, item)`` tuples, called inline."""

    def __init__(self, keys: Keys) -> None:
        self.heap = [(p, d, i, None) for i, (p, d) in enumerate(keys)]
        heapq.heapify(self.heap)
        self.seq = len(keys)

    def run(self, keys: Keys, clock: Clock) -> int:
        h = self.heap
        push, pop = heapq.heappush, heapq.heappop
        seq = self.seq
        t0 = clock()
        for p, d in keys:
            push(h, (p, d, seq, None))
            seq += 1
            pop(h)
        elapsed = clock() - t0
        self.seq = seq
        return elapsed


class WrappedHeapq:
    """The baseline class of ``benchmarks/test_bench_heap.py``: one method call per operation."""

    def __init__(self, keys: Keys) -> None:
        self.base = HeapqBaseline(keys)

    def run(self, keys: Keys, clock: Clock) -> int:
        push, pop = self.base.push, self.base.pop
        t0 = clock()
        for p, d in keys:
            push(p, d, None)
            pop()
        return clock() - t0


class Subject:
    """The tickflow heap (compiled unless ``--impl python``), filled with the same keys."""

    def __init__(self, cls: Any, keys: Keys) -> None:
        self.heap = cls(len(keys) + 1)  # n plus the one pushed before each pop
        for p, d in keys:
            self.heap.push(p, d, None)

    def run(self, keys: Keys, clock: Clock) -> int:
        push, pop = self.heap.push, self.heap.pop
        t0 = clock()
        for p, d in keys:
            push(p, d, None)
            pop()
        return clock() - t0


@dataclass
class SizeResult:
    size: int
    batch: int
    heap_ns: list[int] = field(default_factory=list)
    heapq_ns: list[int] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [q / h for q, h in zip(self.heapq_ns, self.heap_ns, strict=True)]

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    def per_op_us(self, ns: list[int]) -> float:
        return statistics.median(ns) / self.batch / 1e3


Runner = Callable[[Keys, Clock], int]


def paired_round(
    first: Runner, second: Runner, keys: Keys, chunk: int, clock: Clock
) -> tuple[int, int]:
    """CPU (or wall) nanoseconds of ``first`` and ``second`` over the same keys, chunk by chunk."""
    a = b = 0
    gc.disable()
    try:
        for k, start in enumerate(range(0, len(keys), chunk)):
            part = keys[start:start + chunk]
            if k % 2 == 0:
                a += first(part, clock)
                b += second(part, clock)
            else:
                b += second(part, clock)
                a += first(part, clock)
    finally:
        gc.enable()
    return a, b


def measure(
    size: int, rounds: int, batch: int, chunk: int, clock: Clock, heap_cls: Any, wrapped: bool,
    report: Callable[[str], None], kind: str = "random",
) -> SizeResult:
    initial = make_keys(size, seed=size, kind=kind)
    base: InlineHeapq | WrappedHeapq = WrappedHeapq(initial) if wrapped else InlineHeapq(initial)
    subject = Subject(heap_cls, initial)
    del initial
    result = SizeResult(size, batch)
    # One untimed batch each: first-touch page faults and cold caches are not the steady state.
    warm = make_keys(batch, seed=size + 1, kind=kind, start=size)
    paired_round(base.run, subject.run, warm, chunk, clock)
    for r in range(rounds):
        keys = make_keys(batch, seed=size * 1000 + r, kind=kind, start=size + (r + 1) * batch)
        if r % 2 == 0:
            q, h = paired_round(base.run, subject.run, keys, chunk, clock)
        else:
            h, q = paired_round(subject.run, base.run, keys, chunk, clock)
        result.heapq_ns.append(q)
        result.heap_ns.append(h)
        report(
            f"  n={size:.0e} round {r + 1}: heap {h / batch:7.1f} ns/op  "
            f"heapq {q / batch:7.1f} ns/op  ratio {q / h:5.2f}x"
        )
    return result


def _size(text: str) -> int:
    value = int(float(text))
    if value < 1:
        raise argparse.ArgumentTypeError(f"a size must be >= 1, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heap_ratio", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=_positive, default=5, help="paired rounds per size")
    parser.add_argument("--batch", type=_positive, default=DEFAULT_BATCH,
                        help="push+pop operations timed per side per round")
    parser.add_argument("--chunk", type=_positive, default=DEFAULT_CHUNK,
                        help="operations per side before switching to the other side")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: this thread's CPU time (default); wall: elapsed time")
    parser.add_argument("--sizes", type=_size, nargs="+", default=list(DEFAULT_SIZES),
                        help="steady heap sizes (1e5 style accepted)")
    parser.add_argument("--keys", choices=KEY_KINDS, default="random",
                        help="the workload's keys (see make_keys; default: random)")
    parser.add_argument("--impl", choices=("cython", "python"), default="cython",
                        help="the tickflow heap measured (default: the compiled one)")
    parser.add_argument("--wrapped", action="store_true",
                        help="baseline: test_bench_heap's HeapqBaseline methods, not inline heapq")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    module = "fastpath._heap" if args.impl == "cython" else "fastpath._heap_py"
    try:
        heap_cls = importlib.import_module(module).PriorityHeap
    except ImportError as exc:
        print(f"error: {module} is not built ({exc}); run `make build` or pass --impl python",
              file=sys.stderr)
        return 2
    baseline = "HeapqBaseline methods" if args.wrapped else "inline heapq"
    print(f"push+pop, {args.keys} keys, {args.impl} heap vs {baseline}, "
          f"{args.rounds} paired rounds of {args.batch} ops in chunks of {args.chunk}, "
          f"{args.clock} time, gc off while timing")
    clock = CLOCKS[args.clock]
    results = [
        measure(size, args.rounds, args.batch, args.chunk, clock, heap_cls, args.wrapped, print,
                args.keys)
        for size in args.sizes
    ]
    print(f"{'n':>6} {'heap':>10} {'heapq':>10} {'median':>8}  rounds")
    for res in results:
        spread = " ".join(f"{r:.2f}" for r in res.ratios)
        heap_us, heapq_us = res.per_op_us(res.heap_ns), res.per_op_us(res.heapq_ns)
        print(
            f"{res.size:>6.0e} {heap_us:>7.3f} us {heapq_us:>7.3f} us"
            f" {res.median_ratio:>7.2f}x  {spread}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
