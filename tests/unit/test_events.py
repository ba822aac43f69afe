"""The event table is the one declaration of an event type: everything else reads it."""

from __future__ import annotations

import typing

import msgspec
import pytest

from engine.core.coordinator import Coordinator
from engine.core.events import (
    EVENT_KINDS,
    KIND_OF,
    MAX_PRIORITY,
    DataReady,
    Event,
    HighPriorityArrived,
)
from engine.intake import EventDecoder
from engine.service.metrics import EVENT_TYPES


def test_the_table_lists_every_member_of_the_union_once() -> None:
    assert set(typing.get_args(Event)) == {k.struct for k in EVENT_KINDS.values()}
    assert len(KIND_OF) == len(EVENT_KINDS)
    assert tuple(EVENT_KINDS) == EVENT_TYPES


@pytest.mark.parametrize("tag", sorted(EVENT_KINDS))
def test_each_row_is_consistent(tag: str) -> None:
    kind = EVENT_KINDS[tag]
    assert kind.tag == tag
    assert msgspec.inspect.type_info(kind.struct).tag == tag  # type: ignore[attr-defined]
    assert callable(getattr(Coordinator, kind.handler))


def test_required_fields_come_from_the_structs() -> None:
    assert EVENT_KINDS["DATA_READY"].required == {"symbol", "ts", "price"}
    assert EVENT_KINDS["HIGH_PRIORITY_ARRIVED"].required == {"symbol", "priority"}


def test_the_rules_are_the_tables_on_both_decoding_paths() -> None:
    """The fast path (typed decode) and the slow one (an object, e.g. a CSV row or an admin
    body) refuse the same event with the same message, from the same rule."""
    crossed = b'{"type":"DATA_READY","symbol":"A","ts":1,"price":2,"bid":2.5,"ask":2.4}'
    with pytest.raises(ValueError, match=r"bid 2\.5 above ask 2\.4"):
        EventDecoder().decode(crossed)
    with pytest.raises(ValueError, match=r"bid 2\.5 above ask 2\.4"):
        EventDecoder().decode_object(msgspec.json.decode(crossed))
    assert EVENT_KINDS["DATA_READY"].problem(DataReady("A", 1.0, 2.0, bid=2.0, ask=2.0)) is None


@pytest.mark.parametrize("value", [MAX_PRIORITY + 1, 2**64, 2**70])
def test_a_priority_outside_the_heaps_key_range_is_one_message(value: int) -> None:
    line = b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":%d}' % value
    with pytest.raises(ValueError, match=rf"priority above {MAX_PRIORITY} - at `\$\.priority`"):
        EventDecoder().decode(line)
    assert EventDecoder().decode(b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":%d}'
                                 % MAX_PRIORITY) == HighPriorityArrived("A", MAX_PRIORITY)
