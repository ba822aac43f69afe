"""Run ids derived from (partition, stream sequence): a replay re-derives the same ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.service.cluster.runids import MAX_RUNS_PER_EVENT, RunOrigin, run_id, run_origin

partitions = st.integers(0, 1023)
seqs = st.integers(1, (1 << 47) - 1)
indexes = st.integers(0, MAX_RUNS_PER_EVENT - 1)


@given(partitions, seqs, indexes)
def test_round_trip_and_int64(p: int, seq: int, index: int) -> None:
    rid = run_id(p, seq, index)
    assert 0 < rid < 1 << 63  # SQLite INTEGER
    assert run_origin(rid) == RunOrigin(p, seq, index)


@given(partitions, seqs, indexes, partitions, seqs, indexes)
def test_distinct_origins_give_distinct_ids(
    p1: int, s1: int, i1: int, p2: int, s2: int, i2: int
) -> None:
    assert (run_id(p1, s1, i1) == run_id(p2, s2, i2)) == ((p1, s1, i1) == (p2, s2, i2))


def test_a_replay_rederives_the_same_client_order_ids() -> None:
    """Two owners applying the same stream positions name the same orders."""
    first_owner = [f"wf:{run_id(5, seq)}:buy" for seq in (17, 18, 40)]
    after_takeover = [f"wf:{run_id(5, seq)}:buy" for seq in (17, 18, 40)]
    assert first_owner == after_takeover
    assert len(set(first_owner)) == 3
    assert run_id(5, 17) == 17 << 16 | 5


def test_out_of_range_is_refused_with_the_range() -> None:
    with pytest.raises(ValueError, match=r"partition 1024 is outside 0\.\.1023"):
        run_id(1024, 1)
    with pytest.raises(ValueError, match=r"stream sequence 0 is outside 1\.\."):
        run_id(0, 0)
    with pytest.raises(ValueError, match=r"run index 64 is outside 0\.\.63"):
        run_id(0, 1, 64)
    with pytest.raises(ValueError, match=r"not a cluster run id"):
        run_origin(12)
