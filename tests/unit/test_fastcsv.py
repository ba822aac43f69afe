"""The CSV fast path's column parsers read exactly what float() and int() read, or raise alike."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.sources.fastcsv import float_column, int_column


def bits(values: list[float]) -> list[bytes]:
    # Bit patterns, so -0.0 and 0.0 differ (== would let a sign change through).
    return [struct.pack("<d", v) for v in values]


def outcome(parse: object, cells: list[bytes]) -> tuple[str, object]:
    try:
        values = parse(cells)  # type: ignore[operator]
    except ValueError:
        return ("error", None)
    if values and isinstance(values[0], float):
        return ("ok", bits(values))
    return ("ok", values)


number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(min_value=0.0, max_value=1e7).map(lambda x: f"{x:.4f}"),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.from_regex(r"\A[+-]?[0-9]{0,25}(\.[0-9]{0,25})?([eE][+-]?[0-9]{1,3})?\Z"),
)
odd_text = st.sampled_from(
    ["", " ", "-0", "-0.0", "+1", "01", "1_000", "1.", ".5", "nan", "inf", "-inf", "1e400",
     "true", "null", "[1]", "1 2", " 7 ", "7\r", "\t8", "0x10", "1e-400", "4.9e-324"]
)
cells = st.lists(st.one_of(number_text, odd_text), min_size=1, max_size=12).map(
    lambda texts: [t.encode() for t in texts]
)


@given(cells)
@example([b"-0"])
@example([b"1e400", b"1"])
def test_float_column_is_float_to_the_bit(column: list[bytes]) -> None:
    assert outcome(float_column, column) == outcome(lambda c: list(map(float, c)), column)


@given(cells)
@example([b"-0", b"+5", b"05", b"1e2", b"5.0", b"99999999999999999999999"])
def test_int_column_is_int(column: list[bytes]) -> None:
    assert outcome(int_column, column) == outcome(lambda c: list(map(int, c)), column)


def test_the_json_path_is_taken_for_plain_numbers() -> None:
    # Not a speed check: only that plain columns come back as the same values.
    column = [b"1700000000.000007", b"139.8857", b"61", b"0"]
    assert float_column(column) == [1700000000.000007, 139.8857, 61.0, 0.0]
    assert int_column([b"2", b"0", b"7"]) == [2, 0, 7]
    assert math.copysign(1.0, float_column([b"-0"])[0]) == -1.0
    with pytest.raises(ValueError, match="could not convert"):
        float_column([b"1", b"x"])
