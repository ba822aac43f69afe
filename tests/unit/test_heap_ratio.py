"""benchmarks/heap_ratio.py at a toy size: the pairing it claims, not its timings."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

from benchmarks import heap_ratio
from tests.conftest import HEAP_IMPLEMENTATIONS

MODULES = {"python": "fastpath._heap_py", "cython": "fastpath._heap"}


def test_paired_round_alternates_sides_over_the_same_chunks() -> None:
    calls: list[tuple[str, list[tuple[int, float]]]] = []

    def side(name: str) -> heap_ratio.Runner:
        def run(keys: heap_ratio.Keys, clock: heap_ratio.Clock) -> int:
            calls.append((name, keys))
            return 7

        return run

    keys = heap_ratio.make_keys(10, seed=1)
    a, b = heap_ratio.paired_round(side("a"), side("b"), keys, 4, heap_ratio.CLOCKS["cpu"])
    assert (a, b) == (21, 21)  # three chunks each: 4 + 4 + 2 keys
    assert [name for name, _ in calls] == ["a", "b", "b", "a", "a", "b"]
    assert [part for name, part in calls if name == "a"] == [keys[0:4], keys[4:8], keys[8:10]]
    assert [part for name, part in calls if name == "b"] == [keys[0:4], keys[4:8], keys[8:10]]


@pytest.mark.parametrize("kind", heap_ratio.KEY_KINDS)
@pytest.mark.parametrize("impl", HEAP_IMPLEMENTATIONS)
def test_both_sides_hold_the_same_keys_after_the_same_stream(impl: str, kind: str) -> None:
    cls: Any = importlib.import_module(MODULES[impl]).PriorityHeap
    initial = heap_ratio.make_keys(300, seed=3, kind=kind)
    base = heap_ratio.InlineHeapq(initial)
    subject = heap_ratio.Subject(cls, initial)
    clock = heap_ratio.CLOCKS["cpu"]
    for r in range(3):
        keys = heap_ratio.make_keys(500, seed=r, kind=kind, start=300 + 500 * r)
        heap_ratio.paired_round(base.run, subject.run, keys, 64, clock)
    assert len(subject.heap) == len(base.heap) == 300
    drained = []
    while subject.heap:
        drained.append(subject.heap.peek_key()[:2])
        subject.heap.pop()
    assert drained == [entry[:2] for entry in sorted(base.heap)]


def test_make_keys_kinds() -> None:
    assert all(d == 0.0 for _, d in heap_ratio.make_keys(50, seed=1, kind="fifo"))
    clock = heap_ratio.make_keys(50, seed=1, kind="clock", start=1000)
    assert all(0.01 <= d < 0.0115 for _, d in clock)
    assert {p for p, _ in heap_ratio.make_keys(500, seed=1)} == set(range(8))


def test_main_prints_every_round_and_a_median_per_size(capsys: pytest.CaptureFixture[str]) -> None:
    impl = "cython" if "cython" in HEAP_IMPLEMENTATIONS else "python"
    argv = ["--rounds", "3", "--batch", "200", "--chunk", "50", "--sizes", "100", "1e3",
            "--impl", impl, "--keys", "clock"]
    assert heap_ratio.main(argv) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"n=1e\+0[23] round \d: heap .* ratio +[0-9.]+x", out)) == 6
    summary = re.findall(r"^ *(1e\+0[23]) +[0-9.]+ us +[0-9.]+ us +([0-9.]+)x +(.*)$", out, re.M)
    assert [size for size, _, _ in summary] == ["1e+02", "1e+03"]
    for _, median, rounds in summary:
        ratios = sorted(float(r) for r in rounds.split())
        assert len(ratios) == 3
        assert float(median) == pytest.approx(ratios[1], abs=0.006)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "must be >= 1, got 0"),
        (["--sizes", "0"], "a size must be >= 1, got 0"),
        (["--keys", "sorted"], "invalid choice: 'sorted'"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        heap_ratio.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
