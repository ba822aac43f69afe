"""Intake: line decoding, rejection reasons, statistics and the rate-limited reject log."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.errors import EventError
from engine.core.events import (
    DATA_READY,
    HIGH_PRIORITY_ARRIVED,
    DataReady,
    Event,
    HighPriorityArrived,
)
from engine.intake import (
    DECODE_REASONS,
    DEFAULT_MAX_LINE_BYTES,
    MAX_PRIORITY,
    REJECT_REASONS,
    EventDecoder,
    RejectLog,
    encode_event,
)

GOOD = b'{"type":"DATA_READY","symbol":"AAPL","ts":1700000000.5,"price":189.25}'


def line(**fields: object) -> bytes:
    return orjson.dumps(fields)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- accepted lines -----------------------------------------------------------------------------


def test_data_ready_gets_defaults() -> None:
    event = EventDecoder().decode(GOOD)
    assert event == DataReady(symbol="AAPL", ts=1700000000.5, price=189.25)
    assert isinstance(event, DataReady)
    assert (event.volume, event.bid, event.ask, event.priority) == (0.0, None, None, None)


def test_data_ready_with_every_field() -> None:
    raw = line(
        type=DATA_READY, symbol="MSFT", ts=1, price=370, volume=12.5, bid=369.9, ask=370.1,
        priority=3,
    )  # fmt: skip
    event = EventDecoder().decode(raw)
    assert event == DataReady("MSFT", 1.0, 370.0, 12.5, 369.9, 370.1, 3)
    assert isinstance(event, DataReady)
    assert type(event.price) is float  # a JSON integer is accepted for a float field


def test_high_priority_arrived() -> None:
    event = EventDecoder().decode(line(type=HIGH_PRIORITY_ARRIVED, symbol="TSLA", priority=0))
    assert event == HighPriorityArrived(symbol="TSLA", priority=0)


@pytest.mark.parametrize("terminator", [b"", b"\n", b"\r\n"])
def test_line_terminators_are_stripped(terminator: bytes) -> None:
    assert EventDecoder().decode(GOOD + terminator) == DataReady("AAPL", 1700000000.5, 189.25)


def test_unknown_fields_and_key_order_are_ignored() -> None:
    raw = b'{"venue":"X","price":1.5,"ts":2,"extra":{"a":[1,2]},"symbol":"A","type":"DATA_READY"}'
    assert EventDecoder().decode(raw) == DataReady("A", 2.0, 1.5)


def test_locked_market_bid_equal_ask_is_accepted() -> None:
    event = EventDecoder().decode(line(type=DATA_READY, symbol="A", ts=1, price=2, bid=2, ask=2))
    assert isinstance(event, DataReady)
    assert event.bid == event.ask == 2.0


def test_largest_priority_the_heap_takes_is_accepted() -> None:
    raw = line(type=HIGH_PRIORITY_ARRIVED, symbol="A", priority=MAX_PRIORITY)
    assert EventDecoder().decode(raw) == HighPriorityArrived("A", MAX_PRIORITY)


def test_line_of_exactly_the_limit_is_accepted_with_its_terminator() -> None:
    padded = GOOD[:-1] + b',"pad":"' + b"x" * (100 - len(GOOD) - 9) + b'"}'
    assert len(padded) == 100
    decoder = EventDecoder(max_line_bytes=100)
    assert decoder.decode(padded + b"\r\n").symbol == "AAPL"


def test_default_type_applies_only_to_typeless_objects() -> None:
    decoder = EventDecoder(default_type=DATA_READY)
    assert decoder.decode(b'{"symbol":"A","ts":1,"price":2}') == DataReady("A", 1.0, 2.0)
    raw = line(type=HIGH_PRIORITY_ARRIVED, symbol="A", priority=1)
    assert decoder.decode(raw) == HighPriorityArrived("A", 1)
    with pytest.raises(ValueError, match="default_type"):
        EventDecoder(default_type="TASK_FAILED")


# --- rejections: one representative input per reason -------------------------------------------


REJECTIONS = [
    pytest.param(b"", "empty", "blank line", id="empty"),
    pytest.param(b" \t\r\n", "empty", "blank line", id="whitespace"),
    pytest.param(b"x" * 65537, "oversized", "65537 bytes exceeds the 65536-byte", id="oversized"),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"\xff","ts":1,"price":2}',
        "invalid_utf8",
        "invalid UTF-8 at byte 31",
        id="invalid_utf8_in_field",
    ),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":2,"note":"\xc3("}',
        "invalid_utf8",
        "invalid UTF-8 at byte",
        id="invalid_utf8_in_ignored_field",
    ),
    pytest.param(b'{"type":"DATA_READY",', "malformed_json", "", id="truncated"),
    pytest.param(b"{'type': 'DATA_READY'}", "malformed_json", "", id="single_quotes"),
    pytest.param(GOOD + b" trailing", "malformed_json", "", id="trailing_garbage"),
    pytest.param(b'{"price":NaN}', "malformed_json", "", id="nan"),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":1e999}',
        "malformed_json",
        "infinity",
        id="infinite_number",
    ),
    pytest.param(b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}", "malformed_json", "", id="deep"),
    pytest.param(b"[1,2]", "not_object", "got array", id="array"),
    pytest.param(b'"DATA_READY"', "not_object", "got string", id="string"),
    pytest.param(b"null", "not_object", "got null", id="null"),
    pytest.param(b'{"type":"BOGUS"}', "unknown_type", "unknown event type 'BOGUS'", id="unknown"),
    pytest.param(b'{"type":7}', "unknown_type", "must be a string, got number", id="type_number"),
    pytest.param(
        b'{"type":"TASK_COMPLETED","symbol":"A"}',
        "unknown_type",
        "internal event type 'TASK_COMPLETED'",
        id="task_completed",
    ),
    pytest.param(
        b'{"type":"TASK_FAILED"}', "unknown_type", "internal event type", id="task_failed"
    ),
    pytest.param(b'{"symbol":"A","ts":1,"price":2}', "missing_field", "field `type`", id="no_type"),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A"}',
        "missing_field",
        "missing required field `price`, `ts`",
        id="no_price_ts",
    ),
    pytest.param(
        b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A"}',
        "missing_field",
        "field `priority`",
        id="no_priority",
    ),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":"1.5"}',
        "bad_field",
        r"Expected `float`, got `str` - at `\$.price`",
        id="price_string",
    ),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":0}',
        "bad_field",
        r"\$.price",
        id="price_zero",
    ),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A","ts":-1,"price":2}', "bad_field", r"\$.ts", id="ts<0"
    ),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"","ts":1,"price":2}', "bad_field", r"\$.symbol", id="sym"
    ),
    pytest.param(  # storage's JSON batches end a string at a NUL: two symbols would collide
        b'{"type":"DATA_READY","symbol":"AAPL\\u0000x","ts":1,"price":2}',
        "bad_field",
        r"\$.symbol",
        id="sym_control_char",
    ),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":2,"volume":true}',
        "bad_field",
        r"\$.volume",
        id="volume_bool",
    ),
    pytest.param(
        b'{"type":"DATA_READY","symbol":"A","ts":1,"price":2,"bid":2.5,"ask":2.4}',
        "bad_field",
        "bid 2.5 above ask 2.4",
        id="bid_above_ask",
    ),
    pytest.param(
        b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":-1}',
        "bad_field",
        r"\$.priority",
        id="priority_negative",
    ),
    pytest.param(
        b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":1.0}',
        "bad_field",
        r"\$.priority",
        id="priority_float",
    ),
    pytest.param(
        b'{"type":"HIGH_PRIORITY_ARRIVED","symbol":"A","priority":9223372036854775808}',
        "bad_field",
        r"priority above 9223372036854775807",
        id="priority_over_heap_range",
    ),
]


@pytest.mark.parametrize(("raw", "reason", "message"), REJECTIONS)
def test_rejection_reasons(raw: bytes, reason: str, message: str) -> None:
    decoder = EventDecoder()
    with pytest.raises(EventError, match=f"^{reason}: .*{message}") as info:
        decoder.decode(raw)
    assert info.value.reason == reason
    stats = decoder.statistics()
    assert stats.rejected[reason] == 1
    assert (stats.received, stats.accepted, stats.rejected_total) == (1, 0, 1)


def test_every_reason_has_a_representative() -> None:
    covered = {param.values[1] for param in REJECTIONS}
    assert covered == set(DECODE_REASONS)  # symbol_limit is the engine's: test_sources.py
    assert set(DECODE_REASONS) < set(REJECT_REASONS)
    assert len(REJECT_REASONS) == len(set(REJECT_REASONS))


def test_oversized_is_judged_before_parsing() -> None:
    decoder = EventDecoder(max_line_bytes=16)
    with pytest.raises(EventError, match="line of 17 bytes exceeds the 16-byte limit"):
        decoder.decode(b"[" * 17 + b"\r\n")  # would be malformed too; the size is checked first
    assert decoder.max_line_bytes == 16
    with pytest.raises(ValueError, match="max_line_bytes"):
        EventDecoder(max_line_bytes=0)


def test_decode_object_validates_like_a_line() -> None:
    decoder = EventDecoder()
    assert decoder.decode_object({"type": DATA_READY, "symbol": "A", "ts": 1, "price": 2}) == (
        DataReady("A", 1.0, 2.0)
    )
    with pytest.raises(EventError, match="not_object") as info:
        decoder.decode_object(["not", "a", "dict"])
    assert info.value.reason == "not_object"
    with pytest.raises(EventError, match="bad_field"):
        decoder.decode_object({"type": DATA_READY, "symbol": "A", "ts": "x", "price": 2})
    stats = decoder.statistics()
    assert (stats.accepted, stats.rejected["not_object"], stats.rejected["bad_field"]) == (1, 1, 1)


def test_reject_counts_a_reason_found_elsewhere() -> None:
    decoder = EventDecoder()
    error = decoder.reject("oversized", "line 7 is 1 MiB")
    assert (error.reason, str(error)) == ("oversized", "oversized: line 7 is 1 MiB")
    assert decoder.statistics().rejected["oversized"] == 1
    with pytest.raises(ValueError, match="unknown reject reason"):
        decoder.reject("cosmic_rays", "")


def test_statistics_snapshot_is_frozen_and_complete() -> None:
    decoder = EventDecoder()
    decoder.decode(GOOD)
    with pytest.raises(EventError):
        decoder.decode(b"[]")
    snapshot = decoder.statistics()
    assert set(snapshot.rejected) == set(REJECT_REASONS)
    assert (snapshot.received, snapshot.accepted, snapshot.rejected_total) == (2, 1, 1)
    with pytest.raises(TypeError):
        snapshot.rejected["empty"] = 5  # type: ignore[index]
    with pytest.raises(AttributeError):
        snapshot.accepted = 9  # type: ignore[misc]
    decoder.decode(GOOD)
    assert snapshot.accepted == 1  # a snapshot does not follow the decoder


def test_default_limit_is_64_kib() -> None:
    assert DEFAULT_MAX_LINE_BYTES == EventDecoder().max_line_bytes == 65536


# --- encode_event -------------------------------------------------------------------------------

# Every valid symbol: printable ASCII without spaces (engine.events.SYMBOL_PATTERN).
symbols = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    min_size=1,
    max_size=32,
)
positive = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)
priorities = st.integers(min_value=0, max_value=MAX_PRIORITY)


@st.composite
def data_ready(draw: st.DrawFn) -> DataReady:
    bid = draw(st.none() | positive)
    ask = draw(st.none() | positive)
    if bid is not None and ask is not None and bid > ask:
        bid, ask = ask, bid
    return DataReady(
        draw(symbols), draw(non_negative), draw(positive), draw(non_negative), bid, ask,
        draw(st.none() | priorities),
    )  # fmt: skip


events = data_ready() | st.builds(HighPriorityArrived, symbols, priorities)


@given(events)
def test_encode_event_round_trips(event: Event) -> None:
    raw = encode_event(event)
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == 1
    assert EventDecoder().decode(raw) == event


# --- the decoder never fails any other way ------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) | json_values
)
_VALID_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "symbol": st.sampled_from(["AAPL", "BRK.B"]),
    "ts": non_negative,
    "price": positive,
    "volume": non_negative,
    "bid": positive,
    "ask": positive,
    "priority": priorities,
}


@st.composite
def event_like(draw: st.DrawFn) -> dict[str, object]:
    """Mostly well-formed event objects with some fields missing or replaced by any JSON value.

    Weighted so that accepted events and each rejection reason all turn up often.
    """
    obj: dict[str, object] = {}
    kind: object
    if draw(st.integers(min_value=0, max_value=9)) < 8:
        kind = draw(st.sampled_from([DATA_READY, HIGH_PRIORITY_ARRIVED, "TASK_FAILED", None]))
    else:
        kind = draw(field_values)
    if kind is not None:
        obj["type"] = kind
    for key, valid in _VALID_FIELDS.items():
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice < 7:
            obj[key] = draw(valid)
        elif choice < 9:
            obj[key] = draw(field_values | st.integers(min_value=-(2**63), max_value=2**64 - 1))
    if draw(st.booleans()):
        obj["extra"] = draw(json_values)
    return obj


def _outcome(decode: Callable[[Any], Event], value: object) -> tuple[str, object]:
    """("ok", event) or ("rejected", reason); any other exception fails the test."""
    try:
        result: tuple[str, object] = ("ok", decode(value))
    except EventError as exc:
        result = ("rejected", exc.reason)
    if result[0] == "rejected":
        assert result[1] in REJECT_REASONS
    return result


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_binary_raises_only_event_error(raw: bytes) -> None:
    _outcome(EventDecoder(max_line_bytes=200).decode, raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet='{}[]":,.-+eE0123456789 \\utrfalsn\n\r\x00\u00e9\ud800', max_size=120))
def test_fuzz_json_ish_text_raises_only_event_error(text: str) -> None:
    _outcome(EventDecoder().decode, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event_like(), st.integers(min_value=0, max_value=200), st.binary(max_size=3))
def test_fuzz_mutated_events_raise_only_event_error(obj: object, cut: int, junk: bytes) -> None:
    raw = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS) if _finite(obj) else b"{}"
    _outcome(EventDecoder().decode, raw[:cut] + junk + raw[cut:])


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**64  # orjson's integer range
    return True


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(event_like())
def test_fast_path_agrees_with_the_reference_walk(obj: dict[str, object]) -> None:
    """decode() (typed msgspec fast path) and decode_object() (step-by-step) give one answer."""
    if not _finite(obj):
        return
    raw = orjson.dumps(obj)
    assert _outcome(EventDecoder().decode, raw) == _outcome(EventDecoder().decode_object, obj)


# --- RejectLog ----------------------------------------------------------------------------------


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tickflow.intake"]


def test_reject_log_rate_limits_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = RejectLog(limit=2, interval=10.0, clock=clock)
    malformed = EventError("malformed_json", "bad")
    caplog.set_level(logging.WARNING, logger="tickflow.intake")

    assert [log.log(malformed, source="tcp:1") for _ in range(5)] == [True, True] + [False] * 3
    # Another reason has its own budget: a flood of one kind does not hide a different problem.
    assert log.log(EventError("oversized", "big"))
    assert len(_records(caplog)) == 3
    assert log.suppressed() == {"malformed_json": 3, "oversized": 0}

    clock.now += 9.9
    assert not log.log(malformed)  # still inside the window
    clock.now += 0.1
    assert log.log(malformed)  # a new window: the summary first, then the line itself
    messages = _records(caplog)
    assert messages[-2] == "suppressed 4 more 'malformed_json' rejections in the last 10.0 s"
    assert messages[-1] == "rejected event: malformed_json: bad"
    assert log.suppressed()["malformed_json"] == 4


def test_reject_log_flush_reports_pending_suppressions(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = RejectLog(limit=1, interval=60.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="tickflow.intake")
    for _ in range(3):
        log.log(EventError("empty", "blank line"))
    clock.now += 2.5
    log.flush()
    log.flush()  # nothing new held back: no second summary
    assert _records(caplog) == [
        "rejected event: empty: blank line",
        "suppressed 2 more 'empty' rejections in the last 2.5 s",
    ]


def test_reject_log_line_preview_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickflow.intake")
    log = RejectLog(clock=FakeClock())
    log.log(EventError("malformed_json", "x"), source="tcp:9", line=b"evil\nFAKE LOG" + b"z" * 500)
    (record,) = [r for r in caplog.records if r.name == "tickflow.intake"]
    message = record.getMessage()
    assert "\n" not in message
    assert message.startswith("rejected event from tcp:9: malformed_json: x b'evil\\nFAKE LOG")
    assert len(message) < 220  # the preview is bounded
    assert record.reason == "malformed_json"  # type: ignore[attr-defined]
    assert record.source == "tcp:9"  # type: ignore[attr-defined]


def test_reject_log_validates_its_budget() -> None:
    with pytest.raises(ValueError, match="limit"):
        RejectLog(limit=0)
    with pytest.raises(ValueError, match="interval"):
        RejectLog(interval=0)
