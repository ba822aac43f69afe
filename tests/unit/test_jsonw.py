"""The JSON writer of the storage records, compiled and pure: valid JSON, exact values, and
the same bytes from both."""

from __future__ import annotations

import importlib
import math
from types import ModuleType

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath._choose import NO_EXTENSIONS

_decode = msgspec.json.decode
# The fixture only hands out a module: nothing to reset between examples.
_module_fixture = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one(module: ModuleType, write: str, value: object) -> str:
    w = module.JsonWriter()
    getattr(w, write)(value)
    return str(w.take())


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (100.0, "100.0"),
        (101.25, "101.25"),
        (0.000001, "0.000001"),
        (-3.5, "-3.5"),
        (1.7e9, "1700000000.0"),
        (1700000000.123456, "1700000000.123456"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (0.1 + 0.2, "0.30000000000000004"),  # not a whole count of millionths: msgspec's form
        (1e300, "1e300"),
        (math.inf, "null"),
        (math.nan, "null"),
    ],
)
def test_real_prints_counts_of_millionths_with_a_point_and_the_rest_as_msgspec(
    jsonw_module: ModuleType, x: float, expected: str
) -> None:
    assert _one(jsonw_module, "real", x) == expected


@_module_fixture
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_real_reads_back_exactly(jsonw_module: ModuleType, x: float) -> None:
    out = _decode(_one(jsonw_module, "real", x))
    assert out == x
    assert math.copysign(1.0, out) == math.copysign(1.0, x)
    assert isinstance(out, float)


@_module_fixture
@given(st.integers(min_value=-(10**15), max_value=10**15), st.integers(0, 6))
def test_prices_and_times_in_millionths_read_back_exactly(
    jsonw_module: ModuleType, v: int, scale: int
) -> None:
    x = v / 10**scale
    assert _decode(_one(jsonw_module, "real", x)) == x


@_module_fixture
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integer_prints_every_long_long(jsonw_module: ModuleType, v: int) -> None:
    assert _one(jsonw_module, "integer", v) == str(v)


@pytest.mark.parametrize(
    "v",
    [
        0, 1, -1, 9, 10, 99, 100, 101, 12345678, 10**8 - 1, 10**8, 10**8 + 1, -(10**8),
        10**9 + 7, 10**16 - 1, 10**16, 10**16 + 1, 1_779_000_000_123_456, 10**18,
        -(10**18) - 1, 2**63 - 1, -(2**63), -(2**63) + 1,
    ],
)
def test_integer_prints_the_edges_of_its_eight_digit_groups(
    jsonw_module: ModuleType, v: int
) -> None:
    """The compiled writer prints eight digits at a time, the group's leading zeros kept:
    the values where a group begins, ends or is all zeros, and the ends of a long long."""
    assert _one(jsonw_module, "integer", v) == str(v)


def test_integer_beyond_a_long_long_is_refused(jsonw_module: ModuleType) -> None:
    with pytest.raises(OverflowError, match="too large"):
        _one(jsonw_module, "integer", 2**63)


@_module_fixture
@given(st.text())
def test_text_reads_back_as_the_same_string(jsonw_module: ModuleType, s: str) -> None:
    try:
        expected = msgspec.json.encode(s)
    except UnicodeEncodeError:  # a lone surrogate: msgspec refuses it, and so does the writer
        with pytest.raises(UnicodeEncodeError):
            _one(jsonw_module, "text", s)
        return
    out = _one(jsonw_module, "text", s)
    assert out.encode() == expected
    assert _decode(out) == s


def test_text_escapes_quotes_backslashes_and_control_characters(jsonw_module: ModuleType) -> None:
    for s in ['a"b', "a\\b", "a\nb", "\x00", "caf\u00e9", "\u6771\u4eac"]:
        assert _decode(_one(jsonw_module, "text", s)) == s


def test_records_build_an_array_closed_in_place(jsonw_module: ModuleType) -> None:
    w = jsonw_module.JsonWriter(capacity=1)  # grows as it goes
    w.byte(ord("["))
    w.close(ord("]"))
    assert w.take() == "[]"
    w.byte(ord("["))
    for i in range(1000):
        w.byte(ord("["))
        w.integer(i)
        w.byte(ord(","))
        w.text(f"S{i}")
        w.byte(ord(","))
        w.real(i / 4)
        w.byte(ord(","))
        w.null()
        w.byte(ord(","))
        w.value({"k": [i]})
        w.byte(ord(","))
        w.raw(b'"raw"')
        w.byte(ord("]"))
        w.byte(ord(","))
    size = len(w)
    w.integer(123)  # a record that failed half-way is cut off
    w.truncate(size)
    w.close(ord("]"))
    out = _decode(w.take())
    assert out == [[i, f"S{i}", i / 4, None, {"k": [i]}, "raw"] for i in range(1000)]
    assert len(w) == 0
    assert w.take() == ""


def test_value_refuses_what_msgspec_cannot_encode(jsonw_module: ModuleType) -> None:
    w = jsonw_module.JsonWriter()
    with pytest.raises(TypeError, match="Encoding objects of type object is unsupported"):
        w.value(object())


@pytest.mark.skipif(NO_EXTENSIONS, reason="the compiled writer is ruled out")
@given(
    st.lists(
        st.one_of(
            st.floats(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.none()
        ),
        max_size=20,
    )
)
def test_both_writers_write_the_same_bytes(values: list[object]) -> None:
    outs = []
    for name in ("fastpath._jsonw_py", "fastpath._jsonw"):
        w = importlib.import_module(name).JsonWriter()
        for v in values:
            try:
                if isinstance(v, float):
                    w.real(v)
                elif isinstance(v, int):
                    w.integer(v)
                elif isinstance(v, str):
                    w.text(v)
                else:
                    w.null()
            except UnicodeEncodeError:
                w.raw(b'"?"')
            w.byte(ord(","))
        outs.append(w.take())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("at", range(0, 20))
def test_text_that_is_not_ascii_comes_back_whole_wherever_it_falls(
    jsonw_module: ModuleType, at: int
) -> None:
    """The writer hands back ASCII without decoding it; one byte that is not ASCII, anywhere
    in a piece of any length, must send it through the UTF-8 decoder instead."""
    w = jsonw_module.JsonWriter()
    w.raw(b'"' + b"a" * at + "\u00e9".encode() + b"b" * (19 - at) + b'"')
    w.byte(ord(","))
    w.text("\u6771" * (at + 1))
    assert w.take() == '"' + "a" * at + "\u00e9" + "b" * (19 - at) + '",' + (
        '"' + "\u6771" * (at + 1) + '"'
    )
    w.raw(b'"plain"')
    assert w.take() == '"plain"'  # and the next take is ASCII again


def test_none_is_refused_where_bytes_or_text_are_expected(jsonw_module: ModuleType) -> None:
    w = jsonw_module.JsonWriter()
    with pytest.raises(TypeError, match="expected bytes, got NoneType"):
        w.raw(None)
    with pytest.raises(TypeError, match="expected str, got NoneType"):
        w.text(None)
    assert w.take() == ""


@pytest.mark.parametrize("c", [-1, 0xE9, 300])
def test_punctuation_must_be_ascii(jsonw_module: ModuleType, c: int) -> None:
    w = jsonw_module.JsonWriter()
    with pytest.raises(ValueError, match="not an ASCII character"):
        w.byte(c)
    with pytest.raises(ValueError, match="not an ASCII character"):
        w.close(c)
    assert w.take() == ""
