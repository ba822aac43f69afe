"""The collector's settings while an engine session runs, and restored after it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from engine.config import loads_config
from engine.service.daemon import Engine
from engine.service.gcpolicy import tuned_collector

TOML = """
[engine]
gc_gen0_threshold = {threshold}
gc_freeze = {freeze}
[source]
kind = "none"
[workflows.wf]
priority = 1
max_concurrent = 1
[[workflows.wf.steps]]
name = "only"
action = "tests.unit.run_actions:quick"
"""


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_the_context_applies_the_threshold_and_freeze_and_restores_both() -> None:
    before = gc.get_threshold()
    with tuned_collector(12345, freeze=True):
        assert gc.get_threshold() == (12345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_zero_leaves_the_thresholds_alone_and_freeze_is_optional() -> None:
    before = gc.get_threshold()
    with tuned_collector(0, freeze=False):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_restored_even_when_the_body_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="boom"), tuned_collector(999, freeze=True):
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(("threshold", "freeze"), [(25000, "true"), (0, "false")])
def test_an_engine_session_runs_under_its_configured_collector(
    threshold: int, freeze: str
) -> None:
    before = gc.get_threshold()
    engine = Engine(loads_config(TOML.format(threshold=threshold, freeze=freeze)), sources=[])
    seen: list[tuple[tuple[int, int, int], int]] = []

    async def main() -> None:
        async with engine.session():
            seen.append((gc.get_threshold(), gc.get_freeze_count()))

    asyncio.run(main())
    expected = (threshold, before[1], before[2]) if threshold else before
    assert seen[0][0] == expected
    assert (seen[0][1] > 0) is (freeze == "true")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
